"""SFT as a loss: mean token negative log-likelihood of desirable completions."""

import pytest
import torch

from ptalign.losses import SFTLoss
from ptalign.losses.base import UnpairedLogps


def batch(labels=(True, True), requires_grad=False):
    return UnpairedLogps(
        policy=torch.tensor([-12.0, -5.0], dtype=torch.float64, requires_grad=requires_grad),
        labels=torch.tensor(labels),
        weights=torch.tensor([1.0, 0.5], dtype=torch.float64),
        n_tokens=torch.tensor([4, 10]),
    )


def test_sft_pinned_with_weights():
    out = SFTLoss()(batch())
    # -policy / n_tokens * weight = [12/4 * 1, 5/10 * 0.5]
    assert out.losses.tolist() == pytest.approx([3.0, 0.25], rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([-3.0, -0.5], rel=1e-12)
    assert out.rejected_rewards.shape == (0,)


def test_sft_gradient():
    inputs = batch(requires_grad=True)
    out = SFTLoss()(inputs)
    assert not out.chosen_rewards.requires_grad
    out.losses.sum().backward()
    assert inputs.policy.grad.tolist() == pytest.approx([-1.0 / 4, -0.5 / 10], rel=1e-12)


def test_sft_refuses_undesirable_examples():
    with pytest.raises(ValueError, match="got 1 undesirable example"):
        SFTLoss()(batch(labels=(True, False)))


def test_sft_declares_what_it_needs():
    loss = SFTLoss()
    assert loss.desirable_only and not loss.requires_reference and not loss.paired and not loss.requires_kl
