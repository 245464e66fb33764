"""DPO (with conservative label smoothing) and IPO pinned to hand-computed values."""

import math

import pytest
import torch

from ptalign.losses import DPOLoss, IPOLoss
from ptalign.losses.base import PairedLogps


def softplus(t: float) -> float:
    return math.log(1 + math.exp(t))  # -log sigmoid(-t)


def pairs(weights=None, requires_grad=False):
    # h = (chosen - ref_chosen) - (rejected - ref_rejected) = [2 - (-1), -1 - 0.5] = [3, -1.5]
    chosen = torch.tensor([-10.0, -20.0], dtype=torch.float64, requires_grad=requires_grad)
    rejected = torch.tensor([-15.0, -18.0], dtype=torch.float64, requires_grad=requires_grad)
    return PairedLogps(
        chosen=chosen,
        rejected=rejected,
        chosen_tokens=torch.tensor([5, 6]),
        rejected_tokens=torch.tensor([7, 8]),
        weights=torch.tensor(weights or [1.0, 1.0], dtype=torch.float64),
        ref_chosen=torch.tensor([-12.0, -19.0], dtype=torch.float64),
        ref_rejected=torch.tensor([-14.0, -18.5], dtype=torch.float64),
    )


def test_dpo_pinned():
    out = DPOLoss(beta=0.1)(pairs())
    # -log sigmoid(beta h) = log(1 + exp(-beta h))
    assert out.losses.tolist() == pytest.approx([softplus(-0.1 * 3), softplus(-0.1 * -1.5)], rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([0.1 * 2, 0.1 * -1], rel=1e-12)
    assert out.rejected_rewards.tolist() == pytest.approx([0.1 * -1, 0.1 * 0.5], rel=1e-12)


def test_dpo_label_smoothing_and_weights():
    out = DPOLoss(beta=0.1, label_smoothing=0.1)(pairs(weights=[2.0, 0.5]))
    expected = [
        (0.9 * softplus(-0.3) + 0.1 * softplus(0.3)) * 2.0,
        (0.9 * softplus(0.15) + 0.1 * softplus(-0.15)) * 0.5,
    ]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)


def test_dpo_gradient_raises_chosen_lowers_rejected():
    inputs = pairs(requires_grad=True)
    out = DPOLoss(beta=0.1)(inputs)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    out.losses.sum().backward()
    # dL/dchosen = -beta sigmoid(-beta h)
    expected = [-0.1 / (1 + math.exp(0.3)), -0.1 / (1 + math.exp(-0.15))]
    assert inputs.chosen.grad.tolist() == pytest.approx(expected, rel=1e-10)
    assert inputs.rejected.grad.tolist() == pytest.approx([-g for g in expected], rel=1e-10)


def test_ipo_pinned():
    out = IPOLoss(beta=0.25)(pairs(weights=[1.0, 2.0]))
    # (h - 1/(2 beta))^2 with 1/(2 * 0.25) = 2
    assert out.losses.tolist() == pytest.approx([(3 - 2) ** 2, (-1.5 - 2) ** 2 * 2.0], rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25 * 2, 0.25 * -1], rel=1e-12)


def test_ipo_gradient():
    inputs = pairs(requires_grad=True)
    IPOLoss(beta=0.25)(inputs).losses.sum().backward()
    assert inputs.chosen.grad.tolist() == pytest.approx([2 * (3 - 2), 2 * (-1.5 - 2)], rel=1e-12)


@pytest.mark.parametrize("cls", [DPOLoss, IPOLoss])
def test_paired_losses_need_reference(cls):
    inputs = pairs()
    inputs.ref_rejected = None
    with pytest.raises(ValueError, match="needs reference log-probs"):
        cls()(inputs)
    assert cls.paired and cls.requires_reference and not cls().requires_kl


@pytest.mark.parametrize(
    "cls, params, message",
    [
        (DPOLoss, {"beta": 0.0}, "DPOLoss: beta must be a finite number > 0"),
        (DPOLoss, {"label_smoothing": 0.5}, r"DPOLoss: label_smoothing must be in \[0, 0.5\)"),
        (DPOLoss, {"label_smoothing": -0.1}, r"DPOLoss: label_smoothing must be in \[0, 0.5\)"),
        (IPOLoss, {"beta": -1.0}, "IPOLoss: beta must be a finite number > 0"),
    ],
)
def test_validation(cls, params, message):
    with pytest.raises(ValueError, match=message):
        cls(**params)
