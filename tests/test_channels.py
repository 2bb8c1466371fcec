"""Channels to infinity: the continuation keeps what the channel's limit keeps, the network
tends to the derivative (or linear) unit as 1/t^2, and the loss along it certifies a channel
(and only a channel)."""

from __future__ import annotations

import pytest
import torch

from escapelab.landscape.channels import (
    Channel,
    channel_drop,
    continue_channel,
    find_channels,
)
from escapelab.landscape.classify import classify
from escapelab.nets.activations import ACTIVATIONS
from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import DataObjective
from escapelab.problems.teacher import gaussian_inputs
from hand_results import hand_result

pytestmark = pytest.mark.usefixtures("single_thread")

ERF = ACTIVATIONS["erf"]
T = torch.tensor([1.0, 2.0, 8.0], dtype=torch.float64)
V = torch.tensor([0.6, -0.8], dtype=torch.float64)  # the merging units' common direction
U = torch.tensor([0.5, 0.5], dtype=torch.float64)  # the derivative unit's coefficient a_diff*w_diff


def _pair(arch: Architecture, amp: float, other: list[float]) -> torch.Tensor:
    """Units (V + d, A), (V - d, -A) with 2 A d = U (a point on the derivative-unit channel),
    and a third unit with incoming ``other`` and outgoing weight 1."""
    theta = torch.zeros(arch.n_params, dtype=torch.float64)
    layers = arch.unflatten(theta)
    d = U / (2 * amp)
    layers[0].weight.copy_(torch.stack([V + d, V - d, torch.tensor(other, dtype=torch.float64)]))
    layers[1].weight.copy_(torch.tensor([[amp, -amp, 1.0]], dtype=torch.float64))
    return theta


def _derivative_unit_objective(arch: Architecture) -> DataObjective:
    """Targets = the channel's limit: sigma'(V.x) U.x + sigma(x_2), the third unit's."""
    x = gaussian_inputs(400, 2, seed=0)
    y = ERF.d1(x @ V) * (x @ U) + ERF.fn(x[:, 1])
    return DataObjective(arch, x, y.unsqueeze(1), kernel="torch")


def test_the_pair_continuation_keeps_sums_midpoints_and_the_derivative_coefficient() -> None:
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    theta = _pair(arch, 5.0, [0.0, 1.0])
    moved = continue_channel(arch, theta, Channel(0, 0, 1), T)
    assert torch.equal(moved[0], theta)
    for k, t in enumerate(T.tolist()):
        w, a = arch.unflatten(moved[k])
        assert float(a.weight[0, 0] + a.weight[0, 1]) == pytest.approx(0.0, abs=1e-14)
        assert float(a.weight[0, 0]) == pytest.approx(5.0 * t, rel=1e-14)
        assert torch.allclose((w.weight[0] + w.weight[1]) / 2, V, atol=1e-15)
        # a_diff * w_diff / 2 = U at every t: the derivative unit's coefficient is held
        coef = (a.weight[0, 0] - a.weight[0, 1]) / 2 * (w.weight[0] - w.weight[1]) / 2 * 2
        assert torch.allclose(coef, U, atol=1e-14)
        assert torch.equal(w.weight[2], theta[4:6])  # the other unit is untouched


def test_an_antiparallel_pair_of_an_odd_activation_continues_as_the_same_function() -> None:
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    theta = _pair(arch, 5.0, [0.0, 1.0])
    flipped = theta.clone()
    w, a = arch.unflatten(flipped)
    w.weight[1] *= -1
    a.weight[0, 1] *= -1  # (-w, -a): the same unit of an odd activation
    x = gaussian_inputs(50, 2, seed=1)
    plain = continue_channel(arch, theta, Channel(0, 0, 1), T)
    odd = continue_channel(arch, flipped, Channel(0, 0, 1, flip=True), T)
    assert torch.allclose(arch.forward(plain, x), arch.forward(odd, x), atol=1e-13)


def test_the_network_tends_to_the_derivative_unit_as_one_over_t_squared() -> None:
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    objective = _derivative_unit_objective(arch)
    theta = _pair(arch, 10.0, [0.0, 1.0])
    t = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    moved = continue_channel(arch, theta, Channel(0, 0, 1), t)
    err = (arch.forward(moved, objective.x) - objective.y).abs().amax(dim=(1, 2))
    ratios = err[:-1] / err[1:]
    assert torch.allclose(ratios, torch.full_like(ratios, 4.0), rtol=0.05)


def test_a_linearizing_unit_continues_to_the_linear_unit() -> None:
    arch = Architecture(2, (1,), 1, "erf", bias=False)
    theta = torch.tensor([0.01, 0.02, 50.0], dtype=torch.float64)
    assert find_channels(arch, theta, 1e-2, 3.0) == [Channel(0, 0)]
    moved = continue_channel(arch, theta, Channel(0, 0), T)
    assert torch.allclose(moved[:, 2] * moved[:, 0], torch.full((3,), 0.5, dtype=torch.float64))
    x = gaussian_inputs(50, 2, seed=2)
    linear = float(ERF.d1(torch.zeros(()))) * 50.0 * (x @ theta[:2])
    err = (arch.forward(moved, x)[..., 0] - linear).abs().amax(dim=1)
    assert float(err[2]) < float(err[0]) / 60  # 1/t^2: 64 times smaller at t = 8


def test_biases_and_a_deeper_layer_continue_too() -> None:
    arch = Architecture(2, (2, 2), 1, "tanh", bias=True)
    theta = torch.randn(
        arch.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    moved = continue_channel(arch, theta, Channel(1, 0, 1), T)
    first, second, out = arch.unflatten(moved)
    assert torch.equal(first.weight, arch.unflatten(theta)[0].weight.expand(3, -1, -1))
    bias_mid = (second.bias[:, 0] + second.bias[:, 1]) / 2
    assert torch.allclose(bias_mid, bias_mid[0].expand(3), atol=1e-15)
    a_diff = out.weight[:, 0, 0] - out.weight[:, 0, 1]
    assert torch.allclose(a_diff, a_diff[0] * T, rtol=1e-14)


def test_the_loss_falls_along_a_channel_and_the_member_is_classified_as_one() -> None:
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    objective = _derivative_unit_objective(arch)
    theta = _pair(arch, 10.0, [0.0, 1.0])
    channels = find_channels(arch, theta, 1e-2, 3.0)
    assert channels == [Channel(0, 0, 1)]
    drop = channel_drop(objective, theta, channels)
    loss = float(objective.loss(theta.unsqueeze(0))[0])
    assert 0.9 * loss < drop < loss  # the limit fits exactly: most of the loss goes
    # a member stopped as converged there (far along a channel the gradient is tiny) is no
    # minimum: the continuation says channel
    (end,) = classify(objective, hand_result(objective, theta.unsqueeze(0), ["converged"]))
    assert end.kind == "flat_channel" and end.channel_drop == pytest.approx(drop)


def test_a_line_of_split_units_is_no_channel() -> None:
    """Exact duplicates (a split unit): the continuation leaves the function as it is."""
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    objective = _derivative_unit_objective(arch)
    theta = torch.zeros(arch.n_params, dtype=torch.float64)
    w, a = arch.unflatten(theta)
    w.weight.copy_(torch.stack([V, V, torch.tensor([0.0, 1.0], dtype=torch.float64)]))
    a.weight.copy_(torch.tensor([[6.0, -4.0, 1.0]], dtype=torch.float64))
    channels = find_channels(arch, theta, 1e-2, 3.0)
    assert channels == [Channel(0, 0, 1)]
    assert channel_drop(objective, theta, channels) == 0.0
    (end,) = classify(objective, hand_result(objective, theta.unsqueeze(0), ["converged"]))
    assert end.kind in ("local_min", "saddle") and end.channel_drop == 0.0


def test_a_channel_that_would_move_held_coordinates_does_not_count() -> None:
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    objective = _derivative_unit_objective(arch)
    theta = _pair(arch, 10.0, [0.0, 1.0])
    channels = find_channels(arch, theta, 1e-2, 3.0)
    free = torch.ones(arch.n_params, dtype=torch.bool)
    assert channel_drop(objective, theta, channels, free) > 0
    free[0] = False  # unit 0's first incoming weight is held
    assert channel_drop(objective, theta, channels, free) == 0.0
