"""Shared tensor plumbing: sequence log-probs, KL estimates and reference points.

Small documented functions over tensors; no model is loaded here and nothing is logged.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

# Rows of (positions x vocab) logits materialised at once when scoring completion tokens.
LOGIT_CHUNK = 1024


def completion_positions(completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Positions whose *next* token is a completion token.

    completion_mask: ``[B, T]`` 1 where ``input_ids[b, t]`` is a completion token.
    Returns ``(rows, cols)`` of the hidden states that predict those tokens (``cols + 1`` are
    the targets), in row-major order.
    """
    target = completion_mask[:, 1:].bool()
    rows, cols = target.nonzero(as_tuple=True)
    return rows, cols


def sequence_logps(
    hidden: Tensor, lm_head: torch.nn.Module, input_ids: Tensor, completion_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """Sum of log p(y_t | x, y_<t) over the completion tokens of each sequence.

    hidden:          ``[B, T, H]`` last hidden states of the backbone
    lm_head:         the output projection (``[V, H]`` weight)
    input_ids:       ``[B, T]``
    completion_mask: ``[B, T]`` 1 on completion tokens, 0 on prompt and padding
    Returns ``(logps [B], n_tokens [B])``.

    Only positions that predict a completion token go through the LM head -- prompt and padding
    positions never build a vocabulary-sized row, which for a 135M model is a fifth of the
    forward FLOPs at typical prompt/completion ratios.
    """
    rows, cols = completion_positions(completion_mask)
    batch = input_ids.shape[0]
    targets = input_ids[rows, cols + 1]
    selected = hidden[rows, cols]
    token_logps = torch.cat(
        [
            -F.cross_entropy(lm_head(selected[i : i + LOGIT_CHUNK]).float(), targets[i : i + LOGIT_CHUNK], reduction="none")
            for i in range(0, max(len(targets), 1), LOGIT_CHUNK)
        ]
    ) if len(targets) else hidden.new_zeros(0)
    logps = hidden.new_zeros(batch, dtype=torch.float32).index_add(0, rows, token_logps)
    n_tokens = torch.bincount(rows, minlength=batch)
    return logps, n_tokens


def mmd_rbf(x: Tensor, y: Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> Tensor:
    """Squared maximum mean discrepancy between samples ``x [n, d]`` and ``y [m, d]`` (Gretton et
    al. 2012) under a sum of Gaussian kernels, the biased V-statistic

        MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y),
        k(a, b) = sum_{i=0}^{K-1} exp(-||a - b||^2 / (h * kernel_mul^(i - K // 2)))

    with the base bandwidth ``h`` the mean squared distance between distinct points of the pooled
    sample (held constant for the gradient), as in the multi-kernel MMD RepNoise uses (Rosati et
    al. 2024). Zero when the samples coincide; at most ``2 * kernel_num``.
    """
    z = torch.cat([x, y]).float()
    d2 = torch.cdist(z, z).pow(2)
    n = len(z)
    h = (d2.detach().sum() / max(n * n - n, 1)).clamp(min=1e-12)
    kernel = sum(torch.exp(-d2 / (h * kernel_mul ** (i - kernel_num // 2))) for i in range(kernel_num))
    k = len(x)
    return kernel[:k, :k].mean() + kernel[k:, k:].mean() - 2 * kernel[:k, k:].mean()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over processes (identity in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def kl_reference_point(policy_kl_logps: Tensor, reference_kl_logps: Tensor) -> Tensor:
    """KTO's reference point z0 = max(0, E[log pi_theta(y'|x) - log pi_ref(y'|x)]).

    Estimated on mismatched (prompt, completion) pairs of the batch (Ethayarajh et al., 2024,
    eq. 7), detached. Across processes the mean is a *global* sum over a *global* count, so
    processes holding different numbers of examples are weighted by their examples, not
    equally.
    """
    diff = (policy_kl_logps - reference_kl_logps).detach().float()
    stats = torch.stack([diff.sum(), diff.new_tensor(float(diff.numel()))])
    total, count = all_reduce_sum(stats).unbind()
    return (total / count.clamp(min=1)).clamp(min=0)


class RunningMean:
    """Exponential moving average of a scalar, used as a running reference point.

    ``update(x)`` returns the mean *before* ``x`` is folded in (the reference point a batch is
    judged against must not depend on that batch), except on the first call.
    """

    def __init__(self, momentum: float = 0.9):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"running-mean momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.value: float | None = None

    def update(self, x: Tensor) -> Tensor:
        x = float(all_reduce_sum(x.detach().float().reshape(1)).item()) / _world_size()
        current = x if self.value is None else self.value
        self.value = x if self.value is None else self.momentum * self.value + (1 - self.momentum) * x
        return torch.tensor(current)

    def state_dict(self) -> dict:
        return {"momentum": self.momentum, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.momentum, self.value = state["momentum"], state["value"]


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
