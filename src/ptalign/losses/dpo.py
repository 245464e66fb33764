"""Direct Preference Optimisation (DPO) and Identity Preference Optimisation (IPO) on pairs."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ptalign.losses import LOSSES, check_param, is_real
from ptalign.losses.base import Loss, LossOutput, PairedLogps


def pair_logratios(inputs: PairedLogps, loss_name: str) -> tuple[Tensor, Tensor]:
    """Per-pair log-ratios (chosen - ref_chosen, rejected - ref_rejected), each ``[B]``."""
    if inputs.ref_chosen is None or inputs.ref_rejected is None:
        raise ValueError(
            f"{loss_name} needs reference log-probs; PairedLogps.ref_chosen/ref_rejected is None"
        )
    return inputs.chosen - inputs.ref_chosen, inputs.rejected - inputs.ref_rejected


def smoothed_logistic_loss(logits: Tensor, label_smoothing: float) -> Tensor:
    """-(1 - eps) log sigmoid(logits) - eps log sigmoid(-logits): the conservative (cDPO) loss
    that treats each preference label as flipped with probability eps."""
    return -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing


def check_label_smoothing(loss: Loss) -> None:
    value = loss.label_smoothing
    check_param(loss, "label_smoothing", is_real(value) and 0 <= value < 0.5, "in [0, 0.5)")


@LOSSES.register("dpo")
@dataclass
class DPOLoss(Loss):
    """DPO (Rafailov et al., 2023, "Direct Preference Optimization: Your Language Model is
    Secretly a Reward Model", eq. 7), with conservative label smoothing (Mitchell, 2023, cDPO).

    With h = (log pi_theta(y_w|x) - log pi_ref(y_w|x)) - (log pi_theta(y_l|x) - log pi_ref(y_l|x))::

        L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)

    times the per-pair weight (at eps = 0, TRL's ``loss_type="sigmoid"``). Rewards are
    beta (chosen - ref_chosen) and beta (rejected - ref_rejected), detached.
    """

    paired = True

    beta: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_param(self, "beta", is_real(self.beta) and self.beta > 0, "a finite number > 0")
        check_label_smoothing(self)

    def __call__(self, inputs: PairedLogps) -> LossOutput:
        chosen, rejected = pair_logratios(inputs, "dpo")
        losses = smoothed_logistic_loss(self.beta * (chosen - rejected), self.label_smoothing)
        return LossOutput(
            losses * inputs.weights, self.beta * chosen.detach(), self.beta * rejected.detach()
        )


@LOSSES.register("ipo")
@dataclass
class IPOLoss(Loss):
    """IPO (Azar et al., 2023, "A General Theoretical Paradigm to Understand Learning from
    Human Preferences", eq. 17), with beta playing the role of the regulariser tau::

        L = (h - 1 / (2 beta))^2

    times the per-pair weight, with h as in DPO computed on *summed* completion log-probs
    (the paper's definition). TRL's ``loss_type="ipo"`` instead averages log-probs per token
    (TRL's comment says the paper's experiments used that normalisation), which changes the
    scale of h and hence the beta that suits: a TRL beta does not transfer. Rewards as in DPO.
    """

    paired = True

    beta: float = 0.1

    def __post_init__(self) -> None:
        check_param(self, "beta", is_real(self.beta) and self.beta > 0, "a finite number > 0")

    def __call__(self, inputs: PairedLogps) -> LossOutput:
        chosen, rejected = pair_logratios(inputs, "ipo")
        losses = (chosen - rejected - 1 / (2 * self.beta)) ** 2
        return LossOutput(
            losses * inputs.weights, self.beta * chosen.detach(), self.beta * rejected.detach()
        )
