"""Prospect loss: the Kahneman-Tversky value function applied to KTO's implied reward."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ptalign.losses import LOSSES, check_param, is_real
from ptalign.losses.base import Loss, LossOutput, UnpairedLogps
from ptalign.losses.kto import implied_reward, per_label, require_reference_point, signed_outcome, split_rewards

#: below this magnitude |x|^a is continued linearly so its gradient stays finite at x = 0
POWER_EPS = 1e-3

REFERENCE_POINTS = ("kl", "running_mean", "fixed")


def safe_power(magnitude: Tensor, exponent: float, eps: float = POWER_EPS) -> Tensor:
    """m^a for m >= 0, with a finite gradient everywhere.

    For m <= eps the power is replaced by its linear continuation m * eps^(a-1) (equal to
    eps^a at m = eps, so the function is continuous). For a == 1 it returns m itself, so
    the KTO special case is bit-exact.
    """
    if exponent == 1.0:
        return magnitude
    # pow's gradient a*m^(a-1) is inf at m = 0 and torch.where would turn 0 * inf into NaN:
    # feed pow only values above eps.
    above = magnitude > eps
    powered = torch.where(above, magnitude, torch.full_like(magnitude, eps)).pow(exponent)
    return torch.where(above, powered, magnitude * eps ** (exponent - 1.0))


def kt_value(x: Tensor, gain_curvature: float, loss_curvature: float, loss_aversion: float) -> Tensor:
    """Kahneman-Tversky value v(x) = x^alpha for x >= 0, -lambda * (-x)^beta_l for x < 0."""
    gain = x >= 0
    # |x| written with where rather than abs(): abs has zero gradient at 0, which is exactly
    # where every example sits on the first step (policy == reference, z0 = 0).
    magnitude = torch.where(gain, x, -x)
    gains = safe_power(magnitude, gain_curvature)
    losses = -loss_aversion * safe_power(magnitude, loss_curvature)
    return torch.where(gain, gains, losses)


def tk_probability_weight(v: Tensor, gamma: Tensor) -> Tensor:
    """Tversky-Kahneman (1992) weight w(p) = p^g / (p^g + (1-p)^g)^(1/g) of p = sigmoid(v).

    Computed in log space (log p = logsigmoid(v), log(1-p) = logsigmoid(-v)) so that p
    saturating at 0 or 1 in floating point gives neither NaN values nor NaN gradients.
    """
    log_p, log_q = F.logsigmoid(v), F.logsigmoid(-v)
    log_norm = torch.logaddexp(gamma * log_p, gamma * log_q) / gamma
    return torch.exp(gamma * log_p - log_norm)


@LOSSES.register("prospect")
@dataclass
class ProspectLoss(Loss):
    """KTO with the full Kahneman-Tversky value function and optional probability weighting.

    Kahneman & Tversky (1979), "Prospect Theory"; Tversky & Kahneman (1992), "Advances in
    Prospect Theory"; applied to alignment as in Ethayarajh et al. (2024), "KTO".

    With r = log pi_theta(y|x) - log pi_ref(y|x) and z the reference point (``inputs.reference_point``):

        x    = beta (r - z)  for desirable,  beta (z - r)  for undesirable   (x > 0: a gain)
        v(x) = x^alpha                 for x >= 0
             = -lambda (-x)^beta_l     for x < 0
        p    = sigmoid(v(x))           the probability a human judges y better than the reference
        w(p) = p^g / (p^g + (1-p)^g)^(1/g)   (only with probability_weighting; g = gamma_gain
                                              for desirable, gamma_loss for undesirable)
        L    = lambda_{D|U} * (1 - w(p)) * weight

    alpha = gain_curvature, beta_l = loss_curvature, lambda = loss_aversion. Powers are linear
    below |x| = 1e-3 (finite gradient at 0) and exactly |x| for an exponent of 1, so with
    alpha = beta_l = lambda = 1, no weighting and the KL reference point this is KTO bit for bit.
    Reference points: "kl" (KTO's batch KL estimate), "running_mean" (the caller keeps an
    exponential mean with ``running_momentum``), "fixed" (the caller passes ``reference_value``).
    Rewards are beta * r, detached.
    """

    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    gain_curvature: float = 1.0
    loss_curvature: float = 1.0
    loss_aversion: float = 1.0
    reference_point: str = "kl"
    reference_value: float = 0.0
    running_momentum: float = 0.9
    probability_weighting: bool = False
    gamma_gain: float = 0.61
    gamma_loss: float = 0.69

    def __post_init__(self) -> None:
        positive = "a finite number > 0"
        check_param(self, "beta", is_real(self.beta) and self.beta > 0, positive)
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            check_param(self, name, is_real(value) and value >= 0, "a finite number >= 0")
        for name in ("gain_curvature", "loss_curvature", "gamma_gain", "gamma_loss"):
            value = getattr(self, name)
            check_param(self, name, is_real(value) and 0 < value <= 1, "in (0, 1]")
        check_param(self, "loss_aversion", is_real(self.loss_aversion) and self.loss_aversion > 0, positive)
        allowed_points = f"one of {', '.join(REFERENCE_POINTS)}"
        check_param(self, "reference_point", self.reference_point in REFERENCE_POINTS, allowed_points)
        check_param(self, "reference_value", is_real(self.reference_value), "a finite number")
        momentum = self.running_momentum
        check_param(self, "running_momentum", is_real(momentum) and 0 <= momentum < 1, "in [0, 1)")
        is_bool = isinstance(self.probability_weighting, bool)
        check_param(self, "probability_weighting", is_bool, "True or False")

    @property
    def requires_kl(self) -> bool:
        return self.reference_point == "kl"

    def __call__(self, inputs: UnpairedLogps) -> LossOutput:
        labels = inputs.labels.bool()
        reward = implied_reward(inputs, "prospect")
        x = signed_outcome(reward, require_reference_point(inputs, "prospect"), labels, self.beta)
        v = kt_value(x, self.gain_curvature, self.loss_curvature, self.loss_aversion)
        if self.probability_weighting:
            gamma = per_label(labels, self.gamma_gain, self.gamma_loss, v)
            utility = tk_probability_weight(v, gamma)
        else:
            utility = torch.sigmoid(v)
        weight = per_label(labels, self.desirable_weight, self.undesirable_weight, x)
        losses = weight * (1 - utility) * inputs.weights
        return LossOutput(losses, *split_rewards(reward, labels, self.beta))
