"""Simple Preference Optimisation (SimPO): reference-free, length-normalised pairs."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ptalign.losses import LOSSES, check_param, is_real
from ptalign.losses.base import Loss, LossOutput, PairedLogps
from ptalign.losses.dpo import check_label_smoothing, smoothed_logistic_loss


def mean_token_logp(logps: Tensor, n_tokens: Tensor) -> Tensor:
    """Summed log-probs / token counts, ``[B]``; an empty completion (0 tokens, sum 0) gives 0."""
    return logps / n_tokens.clamp(min=1)


@LOSSES.register("simpo")
@dataclass
class SimPOLoss(Loss):
    """SimPO (Meng, Xia & Chen, 2024, "SimPO: Simple Preference Optimization with a
    Reference-Free Reward", eq. 6), with DPO-style label smoothing eps::

        r(y) = beta / |y| * log pi_theta(y|x)            (no reference model)
        L    = -(1 - eps) log sigmoid(r(y_w) - r(y_l) - gamma) - eps log sigmoid(-(...))

    times the per-pair weight; gamma is the target reward margin (TRL's experimental
    ``CPOTrainer`` with ``loss_type="simpo"``, ``simpo_gamma=gamma``, ``cpo_alpha=0``).
    Rewards are r(y_w), r(y_l), detached.
    """

    paired = True
    requires_reference = False

    beta: float = 2.0
    gamma: float = 0.5
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_param(self, "beta", is_real(self.beta) and self.beta > 0, "a finite number > 0")
        check_param(self, "gamma", is_real(self.gamma) and self.gamma >= 0, "a finite number >= 0")
        check_label_smoothing(self)

    def __call__(self, inputs: PairedLogps) -> LossOutput:
        chosen = self.beta * mean_token_logp(inputs.chosen, inputs.chosen_tokens)
        rejected = self.beta * mean_token_logp(inputs.rejected, inputs.rejected_tokens)
        losses = smoothed_logistic_loss(chosen - rejected - self.gamma, self.label_smoothing)
        return LossOutput(losses * inputs.weights, chosen.detach(), rejected.detach())
