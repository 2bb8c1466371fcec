"""Tests of network symmetries: canonical forms, unit merging, minima counted modulo them."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from escapelab.landscape.symmetry import (
    MinimumGroup,
    apply_permutation,
    apply_sign_flip,
    canonical_form,
    count_distinct,
    function_distance,
    group_minima,
    merge_duplicates,
    probe_inputs,
)
from escapelab.nets.mlp import Architecture, Layer

pytestmark = pytest.mark.usefixtures("single_thread")

PROBES = probe_inputs(4, 64, seed=7)


@st.composite
def architectures(draw: st.DrawFn, activations: tuple[str, ...]) -> Architecture:
    """Small networks: 1-2 hidden layers of width 1-6, any bias setting."""
    return Architecture(
        d_in=draw(st.integers(1, 4)),
        widths=tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=2))),
        d_out=draw(st.integers(1, 3)),
        activation=draw(st.sampled_from(activations)),
        bias=draw(st.booleans()),
        output_bias=draw(st.booleans()),
    )


def _random_theta(arch: Architecture, seed: int, n: int | None = None) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (arch.n_params,) if n is None else (n, arch.n_params)
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _outputs(arch: Architecture, theta: Tensor) -> Tensor:
    return arch.forward(theta, PROBES[:, : arch.d_in])


def _random_symmetry(
    arch: Architecture, theta: Tensor, gen: torch.Generator, flip: bool = True
) -> Tensor:
    """θ moved by a random permutation of every hidden layer and, if asked, random sign flips."""
    for layer, width in enumerate(arch.widths):
        theta = apply_permutation(arch, theta, layer, torch.randperm(width, generator=gen))
        if flip:
            units = torch.nonzero(torch.rand(width, generator=gen) < 0.5).flatten()
            theta = apply_sign_flip(arch, theta, layer, units)
    return theta


@settings(max_examples=50, deadline=None)
@given(
    arch=architectures(("erf", "tanh", "relu", "softplus")),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_symmetries_leave_canonical_form_and_function_unchanged(
    arch: Architecture, seed: int, data: st.DataObject
) -> None:
    theta = _random_theta(arch, seed)
    moved = theta
    for layer, width in enumerate(arch.widths):
        perm = data.draw(st.permutations(range(width)), label=f"perm{layer}")
        moved = apply_permutation(arch, moved, layer, perm)
        if arch.act.odd:
            units = data.draw(
                st.lists(st.integers(0, width - 1), unique=True), label=f"flip{layer}"
            )
            moved = apply_sign_flip(arch, moved, layer, units)
    canon = canonical_form(arch, theta)
    assert canon.shape == theta.shape
    assert torch.equal(canonical_form(arch, moved), canon)
    assert torch.equal(canonical_form(arch, canon), canon)
    reference = _outputs(arch, theta)
    torch.testing.assert_close(_outputs(arch, moved), reference, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(_outputs(arch, canon), reference, rtol=0.0, atol=1e-12)
    # the canonical parameters are the original ones up to order and sign
    torch.testing.assert_close(canon.abs().sort().values, theta.abs().sort().values)


@settings(max_examples=50, deadline=None)
@given(arch=architectures(("relu",)), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_sign_flip_changes_a_relu_network(
    arch: Architecture, seed: int, data: st.DataObject
) -> None:
    theta = _random_theta(arch, seed)
    # the last hidden layer: there the output moves by a * |z| (a: outgoing weights, z: the
    # unit's pre-activation), while a flip upstream of a dead relu layer would change nothing
    layer = len(arch.widths) - 1
    unit = data.draw(st.integers(0, arch.widths[layer] - 1))
    flipped = apply_sign_flip(arch, theta, layer, [unit])
    change = (_outputs(arch, flipped) - _outputs(arch, theta)).abs().max()
    assert change > 1e-6
    assert not torch.equal(canonical_form(arch, flipped), canonical_form(arch, theta))


def test_canonical_form_rules_and_batches() -> None:
    arch = Architecture(3, (5, 4), 2, "tanh", bias=True, output_bias=True)
    thetas = _random_theta(arch, 3, n=6)
    canon = canonical_form(arch, thetas)
    assert canon.shape == (6, arch.n_params)
    for row, theta in zip(canon, thetas, strict=True):
        assert torch.equal(row, canonical_form(arch, theta))
    for layer in arch.unflatten(canon)[:-1]:
        # signs: every unit's first incoming weight is positive (Gaussian: none negligible)
        assert (layer.weight[..., 0] > 0).all()
        # order: units sorted by their first incoming weight
        assert (layer.weight[..., 1:, 0] > layer.weight[..., :-1, 0]).all()


def test_canonical_form_signs_units_with_zero_outgoing_weights() -> None:
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    theta = _random_theta(arch, 11)
    hidden, out = arch.unflatten(theta)
    out.weight[0, 1] = 0.0  # unit 1 carries nothing out; its sign comes from its incoming weights
    hidden.weight[0, 0] = 0.0  # and unit 0's first incoming weight is zero
    moved = apply_sign_flip(arch, theta, 0, [0, 1])
    canon = canonical_form(arch, moved)
    assert torch.equal(canon, canonical_form(arch, theta))
    w = arch.unflatten(canon)[0].weight
    first_big = torch.where(w[:, 0] != 0, w[:, 0], w[:, 1])
    assert (first_big > 0).all()


def test_canonical_form_orders_twin_units_of_an_inner_layer_invariantly() -> None:
    # units 0 and 1 of the first hidden layer share their incoming weights, so their order is
    # decided by their outgoing weights, which the second layer's symmetries permute and negate
    arch = Architecture(2, (3, 4), 1, "tanh", bias=True)
    theta = _random_theta(arch, 8)
    first = arch.unflatten(theta)[0]
    first.weight[1] = first.weight[0]
    first.bias[1] = first.bias[0]
    canon = canonical_form(arch, theta)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        assert torch.equal(canonical_form(arch, _random_symmetry(arch, theta, gen)), canon)


def test_canonical_form_ignores_noise_between_near_twin_units() -> None:
    # incoming weights equal up to 1e-12: ordering by them would follow the noise; rounded to
    # tol, the twins tie and their distinct outgoing weights decide
    arch = Architecture(3, (4,), 2, "erf", bias=True)
    theta = _random_theta(arch, 9)
    hidden = arch.unflatten(theta)[0]
    hidden.weight[2] = hidden.weight[0]
    hidden.bias[2] = hidden.bias[0]
    canon = canonical_form(arch, theta)
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        noise = 1e-12 * torch.randn(arch.n_params, generator=gen, dtype=torch.float64)
        noisy = canonical_form(arch, _random_symmetry(arch, theta + noise, gen))
        torch.testing.assert_close(noisy, canon, rtol=0.0, atol=1e-11)


def test_canonical_form_rejects_bad_input() -> None:
    arch = Architecture(2, (3,), 1, "tanh")
    with pytest.raises(ValueError, match="tol"):
        canonical_form(arch, _random_theta(arch, 0), tol=0.0)
    with pytest.raises(ValueError, match="permutation"):
        apply_permutation(arch, _random_theta(arch, 0), 0, [0, 0, 1])
    with pytest.raises(ValueError, match="hidden layer"):
        apply_sign_flip(arch, _random_theta(arch, 0), 1, [0])


@settings(max_examples=50, deadline=None)
@given(
    width=st.integers(1, 5),
    activation=st.sampled_from(("erf", "tanh", "relu", "softplus")),
    bias=st.booleans(),
    gamma=st.floats(0.1, 0.9),
    negate=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_merge_duplicates_undoes_a_unit_split(
    width: int,
    activation: str,
    bias: bool,
    gamma: float,
    negate: bool,
    seed: int,
    data: st.DataObject,
) -> None:
    arch = Architecture(3, (width,), 2, activation, bias=bias, output_bias=True)
    theta = _random_theta(arch, seed)
    unit = data.draw(st.integers(0, width - 1), label="unit")
    # the split copy sits last and, for odd activations, may be the negated twin
    sign = -1.0 if negate and arch.act.odd else 1.0
    hidden, out = arch.unflatten(theta)
    wide = dataclasses.replace(arch, widths=(width + 1,))
    w = torch.cat([hidden.weight, sign * hidden.weight[unit : unit + 1]])
    b = (
        None
        if hidden.bias is None
        else torch.cat([hidden.bias, sign * hidden.bias[unit : unit + 1]])
    )
    a = torch.cat([out.weight, sign * (1.0 - gamma) * out.weight[:, unit : unit + 1]], dim=1)
    a[:, unit] *= gamma
    split = wide.flatten([Layer(w, b), Layer(a, out.bias)])
    shuffled = apply_permutation(wide, split, 0, torch.randperm(width + 1))
    assert function_distance(wide, shuffled, arch, theta, PROBES[:, :3]) < 1e-12

    merged_arch, merged = merge_duplicates(wide, shuffled, tol=1e-9)
    assert merged_arch.widths == (width,)
    assert merged_arch == arch
    assert function_distance(merged_arch, merged, arch, theta, PROBES[:, :3]) < 1e-12
    torch.testing.assert_close(
        canonical_form(arch, merged), canonical_form(arch, theta), rtol=0.0, atol=1e-12
    )


def test_merge_duplicates_drops_silent_units() -> None:
    arch = Architecture(2, (4,), 1, "tanh", bias=True, output_bias=True)
    theta = _random_theta(arch, 5)
    hidden, out = arch.unflatten(theta)
    out.weight[0, 1] = 0.0  # unit 1: zero outgoing weight
    hidden.weight[2] = 0.0  # unit 2: zero incoming weights and bias, tanh(0) = 0
    hidden.bias[2] = 0.0
    merged_arch, merged = merge_duplicates(arch, theta, tol=1e-9)
    assert merged_arch.widths == (2,)
    assert function_distance(merged_arch, merged, arch, theta, PROBES[:, :2]) < 1e-14
    kept = merged_arch.unflatten(merged)[0].weight
    torch.testing.assert_close(kept, hidden.weight[[0, 3]], rtol=0.0, atol=0.0)
    # everything silent: one unit with zero outgoing weight remains, the output bias survives
    out.weight.zero_()
    empty_arch, empty = merge_duplicates(arch, theta, tol=1e-9)
    assert empty_arch.widths == (1,)
    assert function_distance(empty_arch, empty, arch, theta, PROBES[:, :2]) == 0.0
    with pytest.raises(ValueError, match="one hidden layer"):
        merge_duplicates(Architecture(2, (2, 2), 1), _random_theta(Architecture(2, (2, 2)), 0))


def test_function_distance_and_probes() -> None:
    probes = probe_inputs(3, 4000, seed=1)
    assert probes.shape == (4000, 3) and probes.dtype == torch.float64
    assert torch.equal(probes, probe_inputs(3, 4000, seed=1))
    assert not torch.equal(probes, probe_inputs(3, 4000, seed=2))
    assert abs(float(probes.mean())) < 0.05 and abs(float(probes.std()) - 1.0) < 0.05
    arch = Architecture(3, (4,), 2, "erf", bias=True, output_bias=True)
    theta = _random_theta(arch, 2)
    shifted = theta.clone()
    shifted[-2:] += torch.tensor([0.3, -0.4], dtype=torch.float64)  # the output bias
    # outputs differ by (0.3, -0.4) everywhere: RMS = sqrt((0.09 + 0.16) / 2)
    assert function_distance(arch, theta, arch, shifted, probes) == pytest.approx(0.125**0.5)
    assert function_distance(arch, theta, arch, theta, probes) == 0.0


@pytest.mark.parametrize(
    "arch",
    [
        Architecture(3, (4,), 1, "tanh", bias=True),
        Architecture(2, (3, 4), 2, "relu", bias=True, output_bias=True),
    ],
    ids=str,
)
def test_group_minima_finds_planted_minima(arch: Architecture) -> None:
    gen = torch.Generator().manual_seed(0)
    bases = _random_theta(arch, 1, n=3)
    copies = (2, 3, 5)
    base_losses = (0.3, 0.1, 0.2)
    thetas, losses, truth = [], [], []
    for k, (base, count) in enumerate(zip(bases, copies, strict=True)):
        for _ in range(count):
            moved = _random_symmetry(arch, base, gen, flip=arch.act.odd)
            noise = 1e-9 * torch.randn(arch.n_params, generator=gen, dtype=torch.float64)
            thetas.append(moved + noise)
            losses.append(base_losses[k] + 1e-3 * len(thetas))
            truth.append(k)
    order = torch.randperm(len(thetas), generator=gen).tolist()
    thetas_t = torch.stack([thetas[i] for i in order])
    losses_t = torch.tensor([losses[i] for i in order], dtype=torch.float64)
    truth = [truth[i] for i in order]
    probes = probe_inputs(arch.d_in, 256, seed=3)

    groups = group_minima(arch, thetas_t, losses_t, 1e-6, probes)
    assert count_distinct(arch, thetas_t, 1e-6, probes) == 3
    assert len(groups) == 3
    assert all(isinstance(g, MinimumGroup) for g in groups)
    # sorted by mean loss: the planted bases 1, 2, 0
    assert [truth[g.members[0]] for g in groups] == [1, 2, 0]
    assert [g.basin_share for g in groups] == [0.3, 0.5, 0.2]
    assert sorted(i for g in groups for i in g.members) == list(range(10))
    for g in groups:
        base = truth[g.members[0]]
        assert {truth[i] for i in g.members} == {base}
        assert g.mean_loss == pytest.approx(float(losses_t[list(g.members)].mean()))
        assert losses_t[g.representative] == losses_t[list(g.members)].min()
        torch.testing.assert_close(
            g.canonical, canonical_form(arch, bases[base]), rtol=0.0, atol=1e-8
        )
    # a looser tolerance than the distance between the minima merges them all
    assert count_distinct(arch, thetas_t, 10.0, probes) == 1
    assert group_minima(arch, thetas_t[:0], losses_t[:0], 1e-6, probes) == []
