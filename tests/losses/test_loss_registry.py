"""The loss registry, build_loss, and the contract every registered loss keeps."""

import dataclasses

import pytest
import torch

from ptalign.losses import LOSSES, KTOLoss, ProspectLoss, UnknownNameError, build_loss
from ptalign.losses.base import Loss, PairedLogps, UnpairedLogps

ALL = ["dpo", "ipo", "kto", "prospect", "sft", "simpo"]


def test_registry_lists_every_loss():
    assert LOSSES.names() == sorted(ALL)


def test_unknown_loss_lists_known_ones():
    with pytest.raises(UnknownNameError, match="unknown loss 'ktoo'; known: dpo, ipo, kto, prospect, sft, simpo"):
        build_loss("ktoo")


def test_unknown_parameter_lists_accepted_ones():
    with pytest.raises(ValueError, match="loss 'kto' got unknown parameter.*betta; accepted: beta, desirable_weight, undesirable_weight"):
        build_loss("kto", betta=0.1)
    with pytest.raises(ValueError, match=r"accepted: \(none\)"):
        build_loss("sft", beta=1.0)


def test_build_loss_passes_parameters():
    loss = build_loss("prospect", beta=0.2, loss_aversion=2.25, reference_point="running_mean")
    assert isinstance(loss, ProspectLoss) and loss.loss_aversion == 2.25 and not loss.requires_kl
    assert build_loss("kto") == KTOLoss()


def make_inputs(loss: Loss, n: int = 6):
    g = torch.Generator().manual_seed(3)
    logps = lambda: (-30 * torch.rand(n, generator=g, dtype=torch.float64))  # noqa: E731
    tokens = torch.randint(1, 20, (n,), generator=g)
    weights = torch.rand(n, generator=g, dtype=torch.float64)
    ref = loss.requires_reference
    if loss.paired:
        return PairedLogps(
            logps().requires_grad_(), logps().requires_grad_(), tokens, tokens + 1, weights,
            logps() if ref else None, logps() if ref else None,
        )
    labels = torch.ones(n, dtype=torch.bool) if loss.desirable_only else torch.arange(n) % 2 == 0
    z = torch.tensor(0.3, dtype=torch.float64)
    return UnpairedLogps(logps().requires_grad_(), labels, weights, tokens, logps() if ref else None, z)


@pytest.mark.parametrize("name", ALL)
def test_every_loss_keeps_the_contract(name):
    loss = build_loss(name)
    assert dataclasses.is_dataclass(loss) and isinstance(loss, Loss)
    assert "20" in type(loss).__doc__ or name == "sft"  # a paper citation with its year
    inputs = make_inputs(loss)
    out = loss(inputs)
    assert out.losses.shape == (6,) and torch.isfinite(out.losses).all()
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    out.losses.sum().backward()
    policy = [inputs.chosen, inputs.rejected] if loss.paired else [inputs.policy]
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in policy)


@pytest.mark.parametrize("name", ALL)
def test_zero_weight_zeroes_the_loss(name):
    loss = build_loss(name)
    inputs = make_inputs(loss)
    inputs.weights = torch.zeros_like(inputs.weights)
    assert torch.equal(loss(inputs).losses, torch.zeros(6, dtype=torch.float64))
