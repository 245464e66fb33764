"""Alignment that anticipates harmful fine-tuning: a simulated attack, or representation noise.

During alignment, ``SimulatedAttack.attacked`` moves the trainable weights theta a few
normalized gradient steps down the harmful-data loss (what a malicious user's fine-tuning
would do; the normalized step is Booster's simulated harmful perturbation, Huang et al. 2024),

    theta' = theta - rho * g / ||g||,   g = grad_theta L_attack(theta)    (``steps`` times)

lets the trainer take the alignment loss at theta' and add its gradient to the step, then
restores theta. The update is first order (d theta' / d theta taken as the identity, as in
first-order MAML and the tamper-resistant training of Tamirisa et al. 2024): the model is
pushed toward weights from which a short harmful fine-tune still lands on refusals.

``RepresentationNoise`` is the other family of defences (RepNoise, Rosati et al. 2024): an extra
loss on held-aside harmful completions that pulls their hidden states, at every layer, toward
Gaussian noise and pushes their likelihood down with a bounded ascent, so that the information a
harmful fine-tune would need is no longer in the representations to be recovered:

    L_noise = weight * mean_l MMD^2(h_l(harmful completion tokens), N(0, I))
              - ascent_weight * log(1 + NLL(harmful completions))
              + retain_weight * NLL(desirable completions)

The last term is RepNoise's likelihood on harmless data: unlike the bounded prospect loss, whose
value saturates once the model has moved far, it keeps pulling the model back to its good
answers, so the noise term cannot take the whole model with it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from ptalign.batches import TrainData, collate_batch


@dataclass
class CycledBatches:
    """Prompt/completion pairs (an SFT ``TrainData``) kept apart from the run's data, cycled batch by batch."""

    data: TrainData
    pad_id: int
    max_length: int

    def __post_init__(self):
        self._cursor = 0

    def next_batch(self, device) -> dict[str, torch.Tensor]:
        batch = self.data.batches[self._cursor % len(self.data.batches)]
        self._cursor += 1
        return {k: v.to(device) for k, v in collate_batch(self.data, batch, self.pad_id, self.max_length).items()}


@dataclass
class SimulatedAttack(CycledBatches):
    """A few SGD steps of supervised fine-tuning on held-aside harmful completions.

    steps:      normalized gradient steps per simulated attack
    radius:     rho, the length of each step in parameter space (no optimizer state is kept)
    weight:     the weight of the loss at the attacked weights, relative to the clean loss
    """

    steps: int = 1
    radius: float = 0.5
    weight: float = 1.0

    def attack_loss(self, scorer, batch) -> torch.Tensor:
        """Mean token negative log-likelihood of the harmful completions (the attacker's SFT loss)."""
        logps, n_tokens = scorer(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        return -(logps / n_tokens.clamp(min=1)).mean()

    @contextlib.contextmanager
    def attacked(self, scorer: torch.nn.Module, params: list[torch.nn.Parameter]) -> Iterator[None]:
        """Inside the block the trainable ``params`` hold the attacked weights; restored after.

        The attack's gradients come from ``torch.autograd.grad``, so they never touch the
        ``.grad`` the trainer is accumulating.
        """
        saved = [p.detach().clone() for p in params]
        try:
            for _ in range(self.steps):
                loss = self.attack_loss(scorer, self.next_batch(params[0].device))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).clamp(min=1e-12)
                with torch.no_grad():
                    for p, g in zip(params, grads):
                        if g is not None:
                            p.sub_(g * (self.radius / norm))
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)


@dataclass
class RepresentationNoise(CycledBatches):
    """The RepNoise-style term of the module docstring, on one harmful batch per call.

    weight:        weight of the layer-averaged MMD to standard Gaussian noise
    ascent_weight: weight of the bounded ascent ``-log(1 + NLL)`` on the harmful completions
    max_tokens:    completion tokens per layer entering the MMD (a seeded random subset; the
                   kernel matrix is quadratic in it)
    retain:        desirable prompt/completion pairs for the retain term
    retain_weight: weight of their mean token NLL (0: no retain pass)
    """

    weight: float = 0.1
    ascent_weight: float = 0.1
    max_tokens: int = 256
    seed: int = 0
    retain: CycledBatches | None = None
    retain_weight: float = 0.0

    def __call__(self, scorer) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, figures)`` for the next harmful batch (skipped when both its weights are 0) and the next
        retain batch; ``scorer`` is the trainer's ``CompletionScorer``."""
        device = next(scorer.parameters()).device
        if self.weight == 0 and self.ascent_weight == 0:  # the retain term alone: no harmful pass to pay for
            loss, figures = torch.zeros((), device=device), {}
        else:
            loss, figures = self._noise(scorer, device)
        if self.retain is not None and self.retain_weight > 0:
            good = self.retain.next_batch(device)
            logps, n_tokens = scorer(good["input_ids"], good["attention_mask"], good["completion_mask"])
            retain_nll = _mean_token_nll(logps, n_tokens)
            loss = loss + self.retain_weight * retain_nll
            figures["noise/retain_nll"] = float(retain_nll.detach())
        return loss, figures

    def _noise(self, scorer, device) -> tuple[torch.Tensor, dict[str, float]]:
        """The MMD and bounded-ascent terms on the next harmful batch."""
        from ptalign.ops import mmd_rbf, sequence_logps

        batch = self.next_batch(device)
        base = scorer.base()
        out = base.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                 output_hidden_states=True, use_cache=False)
        rows, cols = batch["completion_mask"].bool().nonzero(as_tuple=True)
        generator = torch.Generator().manual_seed(self.seed + self._cursor)
        keep = torch.randperm(len(rows), generator=generator)[: self.max_tokens].to(device)
        rows, cols = rows[keep], cols[keep]
        layers = out.hidden_states[1:]  # the residual stream after each block (the last one normed)
        noise = torch.randn(len(rows), layers[0].shape[-1], generator=generator).to(device)
        mmd = torch.stack([mmd_rbf(h[rows, cols], noise) for h in layers]).mean()
        logps, n_tokens = sequence_logps(out.last_hidden_state, base.get_output_embeddings(), batch["input_ids"],
                                         batch["completion_mask"])
        nll = _mean_token_nll(logps, n_tokens)
        loss = self.weight * mmd - self.ascent_weight * torch.log1p(nll)
        return loss, {"noise/mmd": float(mmd.detach()), "noise/nll": float(nll.detach())}


def harmful_nll(scorer, batches: CycledBatches) -> float:
    """Mean token NLL of every completion in ``batches`` (one pass, no gradient): how well the
    model at its current weights fits harmful data, the quantity an attack drives down. Used to
    calibrate ``SimulatedAttack.radius`` against a real attack (``benchmarks/integrity_attack_radius.py``)."""
    device = next(scorer.parameters()).device
    with torch.no_grad():
        scored = [scorer(b["input_ids"], b["attention_mask"], b["completion_mask"])
                  for b in (batches.next_batch(device) for _ in batches.data.batches)]
    return float(_mean_token_nll(torch.cat([lp for lp, _ in scored]), torch.cat([n for _, n in scored])))


def _mean_token_nll(logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood per completion token of a batch (sequence log-probs, token counts)."""
    return -(logps.sum() / n_tokens.sum().clamp(min=1))
