"""Kahneman-Tversky Optimisation (KTO) on unpaired desirable / undesirable feedback."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ptalign.losses import LOSSES, check_param, is_real
from ptalign.losses.base import Loss, LossOutput, UnpairedLogps


def implied_reward(inputs: UnpairedLogps, loss_name: str) -> Tensor:
    """r = log pi_theta(y|x) - log pi_ref(y|x), ``[B]``."""
    if inputs.reference is None:
        raise ValueError(f"{loss_name} needs reference log-probs; UnpairedLogps.reference is None")
    return inputs.policy - inputs.reference


def require_reference_point(inputs: UnpairedLogps, loss_name: str) -> Tensor:
    """z: the reference point the caller estimated (detached, reduced, clamped)."""
    if inputs.reference_point is None:
        raise ValueError(
            f"{loss_name} judges rewards against a reference point; UnpairedLogps.reference_point "
            "is None (pass KTO's KL estimate, e.g. ptalign.ops.kl_reference_point)"
        )
    return inputs.reference_point


def signed_outcome(reward: Tensor, z: Tensor, labels: Tensor, beta: float) -> Tensor:
    """x = beta (r - z) for desirable, beta (z - r) for undesirable examples, ``[B]``.

    Positive x is a gain for the human judging the completion, negative x a loss.
    """
    return torch.where(labels, beta * (reward - z), beta * (z - reward))


def per_label(labels: Tensor, desirable: float, undesirable: float, like: Tensor) -> Tensor:
    """``desirable`` where the label is desirable, ``undesirable`` elsewhere, ``[B]`` (dtype of ``like``)."""
    return torch.where(labels, like.new_tensor(desirable), like.new_tensor(undesirable))


def split_rewards(reward: Tensor, labels: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Detached implied rewards beta * r of the desirable and of the undesirable examples."""
    scaled = beta * reward.detach()
    return scaled[labels], scaled[~labels]


@LOSSES.register("kto")
@dataclass
class KTOLoss(Loss):
    """KTO (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
    eq. 7), as TRL 1.16's ``KTOTrainer`` with ``loss_type="kto"``.

    With r = log pi_theta(y|x) - log pi_ref(y|x) and z0 the batch KL reference point::

        desirable:    L = lambda_D * (1 - sigmoid(beta * (r - z0)))
        undesirable:  L = lambda_U * (1 - sigmoid(beta * (z0 - r)))

    times the per-example weight. Losses keep the input order (TRL concatenates desirable then
    undesirable; the values are the same). Rewards are beta * r, detached.
    """

    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def __post_init__(self) -> None:
        check_param(self, "beta", is_real(self.beta) and self.beta > 0, "a finite number > 0")
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            check_param(self, name, is_real(value) and value >= 0, "a finite number >= 0")

    @property
    def requires_kl(self) -> bool:
        return True

    def __call__(self, inputs: UnpairedLogps) -> LossOutput:
        labels = inputs.labels.bool()
        reward = implied_reward(inputs, "kto")
        x = signed_outcome(reward, require_reference_point(inputs, "kto"), labels, self.beta)
        weight = per_label(labels, self.desirable_weight, self.undesirable_weight, x)
        losses = weight * (1 - torch.sigmoid(x)) * inputs.weights
        return LossOutput(losses, *split_rewards(reward, labels, self.beta))
