"""KTO pinned to hand-computed values and to TRL 1.16's KTOTrainer formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from ptalign.losses import KTOLoss
from ptalign.losses.base import UnpairedLogps


def sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t))


def batch(policy, reference, labels, weights=None, z=0.2, requires_grad=False):
    policy = torch.tensor(policy, dtype=torch.float64, requires_grad=requires_grad)
    return UnpairedLogps(
        policy=policy,
        labels=torch.tensor(labels),
        weights=torch.tensor(weights or [1.0] * len(labels), dtype=torch.float64),
        n_tokens=torch.full((len(labels),), 4),
        reference=torch.tensor(reference, dtype=torch.float64),
        reference_point=torch.tensor(z, dtype=torch.float64),
    )


# r = policy - reference = [1.5, -1.0, -0.5]; labels desirable, undesirable, desirable; z0 = 0.2
EXAMPLE = dict(policy=[-10.0, -8.0, -5.0], reference=[-11.5, -7.0, -4.5], labels=[True, False, True])


def test_kto_pinned_values_in_input_order():
    out = KTOLoss(beta=0.1)(batch(**EXAMPLE))
    expected = [
        1 - sigmoid(0.1 * (1.5 - 0.2)),  # desirable: 1 - sigmoid(beta (r - z0))
        1 - sigmoid(0.1 * (0.2 - (-1.0))),  # undesirable: 1 - sigmoid(beta (z0 - r))
        1 - sigmoid(0.1 * (-0.5 - 0.2)),
    ]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([0.1 * 1.5, 0.1 * -0.5], rel=1e-12)
    assert out.rejected_rewards.tolist() == pytest.approx([0.1 * -1.0], rel=1e-12)


def test_kto_class_and_example_weights():
    loss = KTOLoss(beta=0.1, desirable_weight=1.33, undesirable_weight=0.8)
    out = loss(batch(**EXAMPLE, weights=[1.0, 2.0, 0.5]))
    expected = [
        1.33 * (1 - sigmoid(0.1 * 1.3)) * 1.0,
        0.8 * (1 - sigmoid(0.1 * 1.2)) * 2.0,
        1.33 * (1 - sigmoid(0.1 * -0.7)) * 0.5,
    ]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)


def trl_kto_losses(policy, reference, labels, kl, beta, desirable_weight, undesirable_weight):
    """The lines of trl/trainer/kto_trainer.py::_compute_loss (loss_type="kto"), verbatim."""
    chosen_idx = torch.nonzero(labels, as_tuple=False).view(-1)
    rejected_idx = torch.nonzero(~labels, as_tuple=False).view(-1)
    chosen_logratios = policy.index_select(0, chosen_idx) - reference.index_select(0, chosen_idx)
    rejected_logratios = policy.index_select(0, rejected_idx) - reference.index_select(0, rejected_idx)
    chosen_losses = 1 - F.sigmoid(beta * (chosen_logratios - kl))
    rejected_losses = 1 - F.sigmoid(beta * (kl - rejected_logratios))
    losses = torch.cat((desirable_weight * chosen_losses, undesirable_weight * rejected_losses), 0)
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach(), chosen_idx, rejected_idx


def test_kto_matches_trl_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    policy, reference = -50 * torch.rand(64, generator=g), -50 * torch.rand(64, generator=g)
    labels = torch.rand(64, generator=g) < 0.4
    kl = torch.tensor(0.37)
    inputs = UnpairedLogps(policy, labels, torch.ones(64), torch.full((64,), 9), reference, kl)
    out = KTOLoss(beta=0.1, desirable_weight=1.33, undesirable_weight=0.7)(inputs)
    trl, chosen, rejected, chosen_idx, rejected_idx = trl_kto_losses(policy, reference, labels, kl, 0.1, 1.33, 0.7)
    assert torch.equal(out.losses[torch.cat([chosen_idx, rejected_idx])], trl)
    assert torch.equal(out.chosen_rewards, chosen)
    assert torch.equal(out.rejected_rewards, rejected)


def test_kto_gradient_reaches_policy_not_rewards():
    inputs = batch(**EXAMPLE, requires_grad=True)
    out = KTOLoss(beta=0.1)(inputs)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad
    out.losses.sum().backward()
    # d/dpolicy [1 - sigmoid(beta (r - z0))] = -beta s (1 - s); undesirable flips the sign
    s = [sigmoid(0.1 * 1.3), sigmoid(0.1 * 1.2), sigmoid(0.1 * -0.7)]
    expected = [-0.1 * s[0] * (1 - s[0]), 0.1 * s[1] * (1 - s[1]), -0.1 * s[2] * (1 - s[2])]
    assert inputs.policy.grad.tolist() == pytest.approx(expected, rel=1e-10)


def test_kto_all_desirable_batch_has_empty_rejected_rewards():
    out = KTOLoss()(batch([-1.0, -2.0], [-1.0, -2.5], [True, True]))
    assert out.rejected_rewards.shape == (0,)
    assert out.losses.shape == (2,)


def test_kto_needs_reference_point_and_reference():
    inputs = batch(**EXAMPLE)
    inputs.reference_point = None
    with pytest.raises(ValueError, match="reference_point is None"):
        KTOLoss()(inputs)
    inputs = batch(**EXAMPLE)
    inputs.reference = None
    with pytest.raises(ValueError, match="reference log-probs"):
        KTOLoss()(inputs)


def test_kto_declares_what_it_needs():
    loss = KTOLoss()
    assert loss.requires_kl and loss.requires_reference
    assert not loss.paired and not loss.desirable_only


@pytest.mark.parametrize(
    "params, name",
    [
        ({"beta": 0.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"beta": True}, "beta"),
        ({"desirable_weight": -1.0}, "desirable_weight"),
        ({"undesirable_weight": float("inf")}, "undesirable_weight"),
    ],
)
def test_kto_validation_names_the_parameter(params, name):
    with pytest.raises(ValueError, match=rf"KTOLoss: {name} must be"):
        KTOLoss(**params)
