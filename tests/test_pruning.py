"""Oracle tests of magnitude pruning and of the random layer-wise density rules."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from escapelab.nets.mlp import Architecture
from escapelab.nets.views import named_views
from escapelab.tickets.masks import MaskSet, prunable_tensors
from escapelab.tickets.pruning import (
    RANDOM_RULES,
    global_magnitude_prune,
    layer_densities,
    layerwise_magnitude_prune,
    random_masks,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _mlp(seed: int = 0, widths: tuple[int, ...] = (8, 8), d_in: int = 5) -> nn.Sequential:
    torch.manual_seed(seed)
    dims = [d_in, *widths, 3]
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double()


def _oracle_prune(values: np.ndarray, keep: np.ndarray, n_prune: int) -> np.ndarray:
    """keep without the n_prune kept entries of least |value|, ties to the lower index."""
    index = np.arange(values.size)
    kept = index[keep]
    order = np.lexsort((kept, np.abs(values[kept])))  # last key sorts first
    out = keep.copy()
    out[kept[order[:n_prune]]] = False
    return out


def _flat(masks: MaskSet) -> np.ndarray:
    return torch.cat([m.reshape(-1) for m in masks.values()]).numpy()


def _weights_flat(model: nn.Module, names) -> np.ndarray:
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1) for n in names]).numpy()


def _tied_mlp() -> nn.Sequential:
    """Weights with many equal magnitudes, so that the tie rule decides."""
    model = _mlp()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in prunable_tensors(model).values():
            p.copy_(torch.randint(-3, 4, p.shape, generator=gen).double() / 2)
    return model


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
def test_global_magnitude_pruning_removes_the_smallest_across_layers(tied: bool) -> None:
    model = _tied_mlp() if tied else _mlp()
    masks = global_magnitude_prune(model, 0.37)
    names = list(prunable_tensors(model))
    assert list(masks) == names
    values = _weights_flat(model, names)
    expected = _oracle_prune(values, np.ones(values.size, bool), round(0.37 * values.size))
    assert np.array_equal(_flat(masks), expected)
    assert masks.total() - masks.remaining() == round(0.37 * 128)
    assert global_magnitude_prune(model, 0.37) == masks  # deterministic


def test_iterative_pruning_prunes_a_fraction_of_what_remains() -> None:
    model = _tied_mlp()
    values = _weights_flat(model, list(prunable_tensors(model)))
    keep = np.ones(values.size, bool)
    masks = None
    for _ in range(3):
        masks = global_magnitude_prune(model, 0.2, masks)
        masks.apply(model)  # pruned weights become the smallest: they must not be counted again
        keep = _oracle_prune(values, keep, round(0.2 * keep.sum()))
        assert np.array_equal(_flat(masks), keep)
    assert masks.remaining() == 66  # 128 -> 102 -> 82 -> 66
    assert abs(masks.remaining() - 0.8**3 * 128) <= 0.5 * (1 + 0.8 + 0.8**2)


@pytest.mark.parametrize("tied", [False, True], ids=["distinct", "tied"])
def test_layerwise_magnitude_pruning_prunes_each_layer_at_its_rate(tied: bool) -> None:
    model = _tied_mlp() if tied else _mlp()
    rates = {"*": 0.2, "4.weight": 0.1}
    start = MaskSet.ones(model)
    start["2.weight"][0] = False  # 8 of 64 already pruned: the rate applies to the other 56
    masks = layerwise_magnitude_prune(model, rates, start)
    pruned = {}
    for name, p in prunable_tensors(model).items():
        values = p.detach().reshape(-1).numpy()
        keep = start[name].reshape(-1).numpy()
        n_prune = round((0.1 if name == "4.weight" else 0.2) * keep.sum())
        assert np.array_equal(masks[name].reshape(-1).numpy(), _oracle_prune(values, keep, n_prune))
        pruned[name] = int((start[name] & ~masks[name]).sum())
    assert pruned == {"0.weight": 8, "2.weight": 11, "4.weight": 2}
    # without "*", the layers not named keep their masks
    only_output = layerwise_magnitude_prune(model, {"4.weight": 0.5}, start)
    assert torch.equal(only_output["0.weight"], start["0.weight"])
    assert torch.equal(only_output["2.weight"], start["2.weight"])
    assert int(only_output["4.weight"].sum()) == 12


def test_ensemble_members_are_pruned_independently() -> None:
    arch = Architecture(3, (6, 5), 2, bias=True, output_bias=True)
    theta = arch.init(4, seed=0, scheme="normal")
    weights = named_views(arch, theta, include_bias=False)
    global_masks = global_magnitude_prune(weights, 0.3, batch_dims=1)
    layer_masks = layerwise_magnitude_prune(weights, {"*": 0.3, "net.4.weight": 0.15}, batch_dims=1)
    for e in range(4):
        member = named_views(arch, theta[e], include_bias=False)
        alone = global_magnitude_prune(member, 0.3)
        assert all(torch.equal(global_masks[n][e], alone[n]) for n in alone)
        alone = layerwise_magnitude_prune(member, {"*": 0.3, "net.4.weight": 0.15})
        assert all(torch.equal(layer_masks[n][e], alone[n]) for n in alone)


@pytest.mark.parametrize("rate", [0, 1, -0.1, 1.5, float("nan"), True, "0.2"])
def test_a_rate_outside_the_open_unit_interval_is_refused(rate: object) -> None:
    model = _mlp()
    with pytest.raises(ValueError, match=r"rate must lie in the open interval \(0, 1\)"):
        global_magnitude_prune(model, rate)
    with pytest.raises(ValueError, match=r"rate of '\*' must lie in the open interval \(0, 1\)"):
        layerwise_magnitude_prune(model, {"*": rate})


def test_pruning_refuses_unknown_layers_and_mismatched_masks() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match=r"rate given for 'net\.4\.weight'.*allowed: the names"):
        layerwise_magnitude_prune(model, {"*": 0.2, "net.4.weight": 0.1})
    with pytest.raises(ValueError, match=r"mask '2\.weight' has shape \(8, 7\)"):
        global_magnitude_prune(model, 0.2, MaskSet({"2.weight": torch.ones(8, 7, dtype=bool)}))
    with pytest.raises(ValueError, match=r"mask 'fc\.weight' names no parameter"):
        global_magnitude_prune(model, 0.2, MaskSet({"fc.weight": torch.ones(8, 8, dtype=bool)}))


def test_nan_weights_that_are_kept_cannot_be_ranked() -> None:
    model = _mlp()
    with torch.no_grad():
        model[2].weight[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"'2\.weight' has nan entries"):
        global_magnitude_prune(model, 0.2)
    masks = MaskSet.ones(model)
    masks["2.weight"][1, 1] = False  # a pruned nan is ignored
    assert global_magnitude_prune(model, 0.2, masks).remaining() == 127 - round(0.2 * 127)


def _scores(shapes: dict[str, tuple[int, ...]]) -> dict[str, float]:
    return {n: sum(s) / math.prod(s) for n, s in shapes.items()}


def _check_rule_definition(
    rule: str, shapes: dict[str, tuple[int, ...]], density: float, p: dict[str, float]
) -> None:
    """The per-layer definition of each rule, and the global density it was scaled to."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    assert math.isclose(
        sum(p[n] * sizes[n] for n in sizes), density * sum(sizes.values()), rel_tol=1e-9
    )
    assert all(0 < d <= 1 for d in p.values())
    free = [n for n in p if p[n] < 1]
    if rule == "uniform":
        assert all(d == density for d in p.values())
    elif rule == "erk" and free:
        scores = _scores(shapes)
        eps = {p[n] / scores[n] for n in free}
        assert max(eps) - min(eps) <= 1e-9 * max(eps)
        assert all(scores[n] * max(eps) >= 1 - 1e-9 for n in p if n not in free)
    elif rule == "balanced" and free:
        kept = [p[n] * sizes[n] for n in free]
        assert max(kept) - min(kept) <= 1e-9 * max(kept)
        assert all(sizes[n] <= max(kept) * (1 + 1e-9) for n in p if n not in free)
    elif rule == "pyramidal":
        d = list(p.values())
        r = d[0]
        assert all(math.isclose(b / a, r, rel_tol=1e-9) for a, b in itertools.pairwise(d))


def _check_masks(result, model: nn.Module, density: float) -> None:
    params = prunable_tensors(model)
    result.masks.validate(model)
    assert list(result.masks) == list(params)
    total = sum(p.numel() for p in params.values())
    assert result.masks.remaining() == round(density * total)
    for name, p in params.items():
        kept = int(result.masks[name].sum())
        assert kept == result.counts[name]
        assert abs(kept - result.layer_densities[name] * p.numel()) < 1


SHAPES = {"0.weight": (300, 20), "2.weight": (300, 300), "4.weight": (10, 300), "6.weight": (2, 3)}


@pytest.mark.parametrize("rule", RANDOM_RULES)
@pytest.mark.parametrize("density", [0.05, 0.3, 0.9, 1.0])
def test_random_rules_meet_their_definitions(rule: str, density: float) -> None:
    p = layer_densities(SHAPES, density, rule)
    _check_rule_definition(rule, SHAPES, density, p)
    if rule in ("erk", "balanced") and density < 1:
        assert p["6.weight"] == 1.0  # the tiny layer is capped, the others rescaled
    if density == 1:
        assert all(d == 1 for d in p.values())


@pytest.mark.parametrize("rule", RANDOM_RULES)
def test_random_masks_reach_the_density_and_are_reproducible(rule: str) -> None:
    model = _mlp(widths=(12, 7, 9))
    result = random_masks(model, 0.3, rule, generator=7)
    assert (result.rule, result.density) == (rule, 0.3)
    _check_masks(result, model, 0.3)
    _check_rule_definition(
        rule,
        {n: tuple(p.shape) for n, p in prunable_tensors(model).items()},
        0.3,
        result.layer_densities,
    )
    again = random_masks(model, 0.3, rule, generator=torch.Generator().manual_seed(7))
    assert again.masks == result.masks
    assert random_masks(model, 0.3, rule, generator=8).masks != result.masks


def test_random_masks_of_an_ensemble_differ_by_member_but_keep_the_same_counts() -> None:
    arch = Architecture(4, (10, 6), 2)
    shapes_only = named_views(
        arch, torch.empty(3, arch.n_params, device="meta"), include_bias=False
    )
    result = random_masks(shapes_only, 0.4, "erk", generator=0, batch_dims=1)
    for name, mask in result.masks.items():
        assert mask.device.type == "cpu" and mask.shape == shapes_only[name].shape
        assert mask.sum(dim=(1, 2)).tolist() == [result.counts[name]] * 3
        assert not torch.equal(mask[0], mask[1])
    assert sum(result.counts.values()) == round(0.4 * (40 + 60 + 12))


@pytest.mark.parametrize("density", [0, -0.5, 1.5, float("nan")])
def test_an_unreachable_density_is_refused(density: float) -> None:
    with pytest.raises(ValueError, match=r"density must lie in \(0, 1\], got"):
        random_masks(_mlp(), density, "uniform", generator=0)


def test_a_density_that_keeps_nothing_and_an_unknown_rule_are_refused() -> None:
    with pytest.raises(ValueError, match=r"density 0\.001 keeps none of the 128 prunable entries"):
        random_masks(_mlp(), 0.001, "erk", generator=0)
    with pytest.raises(ValueError, match="unknown density rule 'er'; allowed: uniform, erk"):
        random_masks(_mlp(), 0.5, "er", generator=0)


@settings(max_examples=40, deadline=None)
@given(
    d_in=st.integers(1, 12),
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    density=st.floats(0.02, 1.0),
    rule=st.sampled_from(RANDOM_RULES),
    seed=st.integers(0, 2**16),
)
def test_every_rule_reaches_the_density_on_random_shapes(
    d_in: int, widths: list[int], density: float, rule: str, seed: int
) -> None:
    model = _mlp(widths=tuple(widths), d_in=d_in)
    total = sum(p.numel() for p in prunable_tensors(model).values())
    if round(density * total) == 0:
        with pytest.raises(ValueError, match="keeps none"):
            random_masks(model, density, rule, generator=seed)
        return
    result = random_masks(model, density, rule, generator=seed)
    _check_masks(result, model, density)
    shapes = {n: tuple(p.shape) for n, p in prunable_tensors(model).items()}
    _check_rule_definition(rule, shapes, density, result.layer_densities)
