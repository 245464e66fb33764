"""SimPO pinned to hand-computed values: reference-free, length-normalised, target margin."""

import math

import pytest
import torch

from ptalign.losses import SimPOLoss
from ptalign.losses.base import PairedLogps


def softplus(t: float) -> float:
    return math.log(1 + math.exp(t))  # -log sigmoid(-t)


def pairs(weights=None, requires_grad=False):
    # mean token log-probs: chosen [-12/6, -9/3] = [-2, -3], rejected [-20/8, -4/4] = [-2.5, -1]
    return PairedLogps(
        chosen=torch.tensor([-12.0, -9.0], dtype=torch.float64, requires_grad=requires_grad),
        rejected=torch.tensor([-20.0, -4.0], dtype=torch.float64, requires_grad=requires_grad),
        chosen_tokens=torch.tensor([6, 3]),
        rejected_tokens=torch.tensor([8, 4]),
        weights=torch.tensor(weights or [1.0, 1.0], dtype=torch.float64),
    )


def test_simpo_pinned():
    out = SimPOLoss(beta=2.0, gamma=0.5)(pairs())
    # logits = beta (avg_w - avg_l) - gamma = [2 * 0.5 - 0.5, 2 * -2 - 0.5] = [0.5, -4.5]
    assert out.losses.tolist() == pytest.approx([softplus(-0.5), softplus(4.5)], rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([2.0 * -2, 2.0 * -3], rel=1e-12)
    assert out.rejected_rewards.tolist() == pytest.approx([2.0 * -2.5, 2.0 * -1], rel=1e-12)


def test_simpo_label_smoothing_and_weights():
    out = SimPOLoss(beta=2.0, gamma=0.5, label_smoothing=0.2)(pairs(weights=[0.5, 3.0]))
    expected = [(0.8 * softplus(-0.5) + 0.2 * softplus(0.5)) * 0.5, (0.8 * softplus(4.5) + 0.2 * softplus(-4.5)) * 3.0]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)


def test_simpo_gradient_is_length_normalised():
    inputs = pairs(requires_grad=True)
    out = SimPOLoss(beta=2.0, gamma=0.5)(inputs)
    assert not out.chosen_rewards.requires_grad
    out.losses.sum().backward()
    # dL/dchosen = -sigmoid(-logit) * beta / |y_w|
    expected = [-(1 / (1 + math.exp(0.5))) * 2.0 / 6, -(1 / (1 + math.exp(-4.5))) * 2.0 / 3]
    assert inputs.chosen.grad.tolist() == pytest.approx(expected, rel=1e-10)


def test_simpo_is_reference_free_and_survives_empty_completions():
    loss = SimPOLoss()
    assert loss.paired and not loss.requires_reference and not loss.requires_kl
    inputs = pairs()
    inputs.chosen, inputs.chosen_tokens = torch.tensor([0.0, -9.0], dtype=torch.float64), torch.tensor([0, 3])
    assert torch.isfinite(loss(inputs).losses).all()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"beta": 0.0}, "beta must be a finite number > 0"),
        ({"gamma": -0.5}, "gamma must be a finite number >= 0"),
        ({"label_smoothing": 0.7}, r"label_smoothing must be in \[0, 0.5\)"),
    ],
)
def test_validation(params, message):
    with pytest.raises(ValueError, match=f"SimPOLoss: {message}"):
        SimPOLoss(**params)
