"""Prospect loss: KTO as a bit-exact special case, then each prospect-theory ingredient pinned."""

import math

import pytest
import torch

from ptalign.losses import KTOLoss, ProspectLoss
from ptalign.losses.base import UnpairedLogps
from ptalign.losses.prospect import POWER_EPS, safe_power, tk_probability_weight


def sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t))


def tk_weight(p: float, g: float) -> float:
    return p**g / (p**g + (1 - p) ** g) ** (1 / g)


def batch(policy, reference, labels, weights=None, z=0.0, requires_grad=False, dtype=torch.float64):
    return UnpairedLogps(
        policy=torch.tensor(policy, dtype=dtype, requires_grad=requires_grad),
        labels=torch.tensor(labels),
        weights=torch.tensor(weights or [1.0] * len(labels), dtype=dtype),
        n_tokens=torch.full((len(labels),), 4),
        reference=torch.tensor(reference, dtype=dtype),
        reference_point=torch.tensor(z, dtype=dtype),
    )


def random_batch(seed: int, z: float, n: int = 64) -> UnpairedLogps:
    g = torch.Generator().manual_seed(seed)
    reference = -40 * torch.rand(n, generator=g)
    policy = reference + 8 * torch.randn(n, generator=g)
    policy[::5] = reference[::5]  # x == 0 exactly when z == 0: the first training step
    labels = torch.rand(n, generator=g) < 0.5
    labels[:2] = torch.tensor([True, False])
    weights = 0.5 + torch.rand(n, generator=g)
    return UnpairedLogps(policy.requires_grad_(), labels, weights, torch.full((n,), 7), reference, torch.tensor(z))


@pytest.mark.parametrize("z", [0.0, 0.37])
@pytest.mark.parametrize("class_weights", [(1.0, 1.0), (1.33, 0.7)])
def test_defaults_are_kto_bit_for_bit(z, class_weights):
    dw, uw = class_weights
    kto_in, prospect_in = random_batch(1, z), random_batch(1, z)
    kto = KTOLoss(beta=0.1, desirable_weight=dw, undesirable_weight=uw)(kto_in)
    prospect = ProspectLoss(beta=0.1, desirable_weight=dw, undesirable_weight=uw)(prospect_in)
    assert torch.equal(prospect.losses, kto.losses)
    assert torch.equal(prospect.chosen_rewards, kto.chosen_rewards)
    assert torch.equal(prospect.rejected_rewards, kto.rejected_rewards)
    kto.losses.sum().backward()
    prospect.losses.sum().backward()
    assert torch.equal(prospect_in.policy.grad, kto_in.policy.grad)
    assert (prospect_in.policy.grad != 0).all()  # including the examples sitting at x == 0


def test_curvature_pinned():
    # beta = 1, z = 0: x = r for desirable, -r for undesirable
    inputs = batch(
        policy=[-6.0, -7.75, -10.5, -11.0], reference=[-10.0] * 4, labels=[True, False, True, False]
    )
    out = ProspectLoss(beta=1.0, gain_curvature=0.5, loss_curvature=0.8)(inputs)
    expected = [
        1 - sigmoid(4.0**0.5),  # desirable r = 4: gain x = 4, v = 4^0.5 = 2
        1 - sigmoid(-(2.25**0.8)),  # undesirable r = 2.25: loss x = -2.25, v = -(2.25^0.8)
        1 - sigmoid(-(0.5**0.8)),  # desirable r = -0.5: loss x = -0.5
        1 - sigmoid(1.0**0.5),  # undesirable r = -1: gain x = 1
    ]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)


def test_power_is_linear_below_eps_and_continuous_at_eps():
    # desirable x = 5e-4 with alpha = 0.5; undesirable x = -4e-4 with beta_l = 0.8
    inputs = batch(policy=[5e-4, 4e-4], reference=[0.0, 0.0], labels=[True, False])
    out = ProspectLoss(beta=1.0, gain_curvature=0.5, loss_curvature=0.8)(inputs)
    expected = [1 - sigmoid(5e-4 * 1e-3 ** (0.5 - 1)), 1 - sigmoid(-(4e-4 * 1e-3 ** (0.8 - 1)))]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)
    at_eps = safe_power(torch.tensor([POWER_EPS * (1 - 1e-9), POWER_EPS, POWER_EPS * (1 + 1e-9)], dtype=torch.float64), 0.5)
    assert at_eps.tolist() == pytest.approx([POWER_EPS**0.5] * 3, rel=1e-8)


def test_loss_aversion_scales_losses_only():
    # beta = 0.1, z0 = 0.2, r = [1.5, 3.0, -0.5, -1.0]
    inputs = dict(
        policy=[-10.0, -7.0, -5.0, -8.0], reference=[-11.5, -10.0, -4.5, -7.0], labels=[True, False, True, False], z=0.2
    )
    averse = ProspectLoss(beta=0.1, loss_aversion=2.25)(batch(**inputs)).losses
    neutral = ProspectLoss(beta=0.1)(batch(**inputs)).losses
    expected = [
        1 - sigmoid(0.1 * (1.5 - 0.2)),  # desirable above z0: gain, unchanged
        1 - sigmoid(-2.25 * 0.1 * (3.0 - 0.2)),  # undesirable above z0: loss x = -0.28, v = -2.25 * 0.28
        1 - sigmoid(-2.25 * 0.1 * (0.2 + 0.5)),  # desirable below z0: loss x = -0.07
        1 - sigmoid(0.1 * (0.2 + 1.0)),  # undesirable below z0: gain, unchanged
    ]
    assert averse.tolist() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(averse[[0, 3]], neutral[[0, 3]])
    assert (averse[[1, 2]] > neutral[[1, 2]]).all()


def test_probability_weight_at_one_half_by_hand():
    # w(1/2) = 0.5^g / (2 * 0.5^g)^(1/g) = 2^(1 - g - 1/g); g = 0.61: 2^(-1.2493...) = 0.42064
    w = tk_probability_weight(torch.zeros(2, dtype=torch.float64), torch.tensor([0.61, 0.69], dtype=torch.float64))
    assert w.tolist() == pytest.approx([2 ** (1 - 0.61 - 1 / 0.61), 2 ** (1 - 0.69 - 1 / 0.69)], rel=1e-12)
    assert w[0].item() == pytest.approx(0.42064, abs=1e-5)


def test_probability_weighting_pinned():
    # beta = 0.1, z = 0: x = [0, 0, 1, 2]
    inputs = batch(
        policy=[-3.0, -3.0, 7.0, -20.0], reference=[-3.0, -3.0, -3.0, 0.0], labels=[True, False, True, False]
    )
    out = ProspectLoss(beta=0.1, probability_weighting=True)(inputs)
    expected = [
        1 - tk_weight(0.5, 0.61),  # desirable, gamma_gain
        1 - tk_weight(0.5, 0.69),  # undesirable, gamma_loss
        1 - tk_weight(sigmoid(1.0), 0.61),
        1 - tk_weight(sigmoid(2.0), 0.69),
    ]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-12)


def test_weights_multiply_every_term():
    params = dict(beta=0.1, gain_curvature=0.7, loss_aversion=2.0, probability_weighting=True, desirable_weight=1.5)
    inputs = dict(policy=[-1.0, -2.0, -3.0], reference=[-2.0, -1.0, -3.5], labels=[True, False, True], z=0.1)
    plain = ProspectLoss(**params)(batch(**inputs)).losses
    weighted = ProspectLoss(**params)(batch(**inputs, weights=[2.0, 0.5, 0.0])).losses
    assert weighted.tolist() == pytest.approx((plain * torch.tensor([2.0, 0.5, 0.0], dtype=torch.float64)).tolist())


def test_gradient_finite_at_zero_with_curvature():
    inputs = batch(policy=[-3.0, -3.0], reference=[-3.0, -3.0], labels=[True, False], requires_grad=True)
    out = ProspectLoss(beta=0.1, gain_curvature=0.5, loss_curvature=0.5)(inputs)
    out.losses.sum().backward()
    # x = 0 sits in the gain domain's linear piece: v = x eps^(alpha-1); sigmoid'(0) = 1/4;
    # dx/dpolicy = +beta for desirable, -beta for undesirable
    slope = 0.25 * POWER_EPS ** (0.5 - 1) * 0.1
    assert inputs.policy.grad.tolist() == pytest.approx([-slope, slope], rel=1e-10)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_saturated_probabilities_stay_finite():
    inputs = batch(
        policy=[3000.0, -3000.0, 3000.0, -3000.0], reference=[0.0] * 4, labels=[True, True, False, False],
        requires_grad=True, dtype=torch.float32,
    )
    loss = ProspectLoss(beta=0.1, gain_curvature=0.8, loss_curvature=0.9, loss_aversion=2.25, probability_weighting=True)
    out = loss(inputs)
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(inputs.policy.grad).all()


@pytest.mark.parametrize("point, needs_kl", [("kl", True), ("running_mean", False), ("fixed", False)])
def test_requires_kl_only_for_kl_reference_point(point, needs_kl):
    assert ProspectLoss(reference_point=point).requires_kl is needs_kl


def test_fixed_reference_point_uses_the_passed_value():
    loss = ProspectLoss(beta=0.1, reference_point="fixed", reference_value=0.5)
    out = loss(batch(policy=[-1.0], reference=[-2.0], labels=[True], z=loss.reference_value))
    assert out.losses.tolist() == pytest.approx([1 - sigmoid(0.1 * (1.0 - 0.5))], rel=1e-12)


def test_needs_reference_point():
    inputs = batch(policy=[-1.0], reference=[-2.0], labels=[True])
    inputs.reference_point = None
    with pytest.raises(ValueError, match="prospect judges rewards against a reference point"):
        ProspectLoss()(inputs)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"gain_curvature": 0.0}, r"gain_curvature must be in \(0, 1\]"),
        ({"gain_curvature": 1.2}, r"gain_curvature must be in \(0, 1\]"),
        ({"loss_curvature": -0.5}, r"loss_curvature must be in \(0, 1\]"),
        ({"loss_aversion": 0.0}, "loss_aversion must be a finite number > 0"),
        ({"reference_point": "median"}, "reference_point must be one of kl, running_mean, fixed, got 'median'"),
        ({"reference_value": float("nan")}, "reference_value must be a finite number"),
        ({"running_momentum": 1.0}, r"running_momentum must be in \[0, 1\)"),
        ({"gamma_gain": 0.0}, r"gamma_gain must be in \(0, 1\]"),
        ({"gamma_loss": 1.5}, r"gamma_loss must be in \(0, 1\]"),
        ({"probability_weighting": "yes"}, "probability_weighting must be True or False"),
        ({"beta": 0}, "beta must be a finite number > 0"),
        ({"undesirable_weight": -0.1}, "undesirable_weight must be a finite number >= 0"),
    ],
)
def test_validation_names_parameter_and_range(params, message):
    with pytest.raises(ValueError, match=rf"ProspectLoss: {message}"):
        ProspectLoss(**params)
