"""Pruning: magnitude pruning (one-shot, or iterative by repetition) and random masks with
layer-wise density rules.

Every function takes what it prunes as a ``torch.nn.Module`` (its prunable parameters, see
:func:`~escapelab.tickets.masks.prunable_tensors`) or as a mapping of names to tensors, such as
:func:`~escapelab.nets.views.named_views` of an ensemble's theta (E, P). With
``batch_dims = k`` the first k dims of every tensor index independent networks (the members of an
ensemble): each is pruned on its own, and the layer shapes a rule sees are the remaining dims.

Magnitude pruning (Frankle & Carbin 2019) removes ``round(rate * remaining)`` of the entries a
mask still keeps, those of smallest absolute value, so that applying rate 0.2 n times leaves about
0.8^n of the entries. ``round`` is Python's (half to even); equal magnitudes go first to the entry
that comes first in the layer order and, within a layer, in row-major order.

Random masks keep, in layer l of m_l entries, exactly n_l entries drawn uniformly without
replacement, with n_l within one of p_l m_l for the rule's density p_l and sum_l n_l =
round(d * sum_l m_l) for the requested global density d (largest-remainder rounding). The rules:

* ``uniform``: p_l = d.
* ``erk``, Erdős–Rényi–Kernel (Evci et al. 2020, "Rigging the Lottery"): p_l proportional to
  (sum of the layer's dims) / (product of its dims).
* ``balanced`` (Gadhikar et al. 2023, "Why Random Pruning Is All We Need to Start Sparse"):
  every layer keeps the same number of entries, p_l = d * sum_k m_k / (L * m_l).
* ``pyramidal`` (Gadhikar et al. 2023): p_l = r^l, layers counted from 1 in the order given,
  with r in (0, 1] the root of sum_l m_l r^l = d * sum_l m_l (scipy's brentq).

For ``erk`` and ``balanced`` a layer whose density would exceed 1 is kept whole and the rest are
rescaled to still reach d, repeated until no density exceeds 1 (the scale only grows, so this
ends); ``balanced`` then gives the uncapped layers equal counts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from escapelab.tickets.masks import MaskSet, Target, prunable_tensors

RANDOM_RULES: tuple[str, ...] = ("uniform", "erk", "balanced", "pyramidal")


def _check_rate(rate: float, what: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 < rate < 1:
        raise ValueError(f"{what} must lie in the open interval (0, 1), got {rate!r}")


def _batch_shape(tensors: Mapping[str, Tensor], batch_dims: int) -> torch.Size:
    """The leading shape all tensors share; ValueError when they do not."""
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or batch_dims < 0:
        raise ValueError(f"batch_dims must be a non-negative int, got {batch_dims!r}")
    if not tensors:
        raise ValueError("nothing to prune: no tensors selected")
    lead = next(iter(tensors.values())).shape[:batch_dims]
    for name, t in tensors.items():
        if t.ndim < batch_dims or t.shape[:batch_dims] != lead:
            raise ValueError(
                f"{name!r} has shape {tuple(t.shape)}; with batch_dims={batch_dims} every tensor "
                f"must start with the same batch shape {tuple(lead)}"
            )
        if t.shape[batch_dims:].numel() == 0:
            raise ValueError(f"{name!r} has no entries to prune (shape {tuple(t.shape)})")
    return lead


def _prepare(
    weights: Target, masks: MaskSet | None, include_bias: bool, batch_dims: int
) -> tuple[dict[str, Tensor], MaskSet, int]:
    """The tensors to prune, their current masks (all kept if none) and the number of networks."""
    if masks is None:
        masks = MaskSet.ones(weights, include_bias)
    tensors = masks.tensors(weights)
    return tensors, masks, _batch_shape(tensors, batch_dims).numel()


def _scores(name: str, weight: Tensor, keep: Tensor, rows: int) -> Tensor:
    """|weight| as (rows, n) float64; ValueError if a kept entry is nan (it cannot be ranked)."""
    scores = weight.detach().abs().to(torch.float64).reshape(rows, -1)
    if bool((torch.isnan(scores) & keep).any()):
        raise ValueError(f"{name!r} has nan entries among those its mask keeps; cannot rank them")
    return scores


def _prune_smallest(scores: Tensor, keep: Tensor, rate: float) -> Tensor:
    """``keep`` (rows, n) without, per row, the round(rate * kept) kept entries of least score.

    The entries are ordered by (pruned already, score, position): two stable sorts, the score
    first, then whether pruned, so that equal scores go to the first position.
    """
    k = torch.round(keep.sum(dim=1).to(torch.float64) * rate).to(torch.long)
    order = torch.argsort(scores, dim=1, stable=True)
    pruned_in_order = (~keep).gather(1, order).to(torch.uint8)
    order = order.gather(1, torch.argsort(pruned_in_order, dim=1, stable=True))
    ranks = torch.arange(keep.shape[1], device=keep.device)
    drop = torch.zeros_like(keep).scatter_(1, order, ranks < k[:, None])
    return keep & ~drop


def global_magnitude_prune(
    weights: Target,
    rate: float,
    masks: MaskSet | None = None,
    *,
    include_bias: bool = False,
    batch_dims: int = 0,
) -> MaskSet:
    """New masks without the ``round(rate * remaining)`` smallest-magnitude kept entries, one
    threshold across all masked tensors (per network with ``batch_dims``).

    ``masks``: the current masks, which also select the tensors (default: all prunable ones
    kept). ``rate`` in (0, 1) applies to the entries still kept; the weights' values at pruned
    entries are ignored.
    """
    _check_rate(rate, "rate")
    tensors, masks, rows = _prepare(weights, masks, include_bias, batch_dims)
    keeps = {n: masks[n].to(t.device).reshape(rows, -1) for n, t in tensors.items()}
    scores = torch.cat([_scores(n, t, keeps[n], rows) for n, t in tensors.items()], dim=1)
    kept = _prune_smallest(scores, torch.cat(list(keeps.values()), dim=1), rate)
    parts = kept.split([keep.shape[1] for keep in keeps.values()], dim=1)
    return MaskSet(
        {n: part.reshape(t.shape) for (n, t), part in zip(tensors.items(), parts, strict=True)}
    )


def _layer_rates(rates: float | Mapping[str, float], names: list[str]) -> dict[str, float]:
    """Rate by layer name from a single rate or from exact names plus ``"*"`` for the rest."""
    if not isinstance(rates, Mapping):
        _check_rate(rates, "rate")
        return dict.fromkeys(names, rates)
    for key, rate in rates.items():
        if key != "*" and key not in names:
            raise ValueError(
                f"rate given for {key!r}, which is not a masked tensor; allowed: the names "
                f"{', '.join(map(repr, names))} and '*' for all others"
            )
        _check_rate(rate, f"rate of {key!r}")
    return {n: rates[n] if n in rates else rates["*"] for n in names if n in rates or "*" in rates}


def layerwise_magnitude_prune(
    weights: Target,
    rates: float | Mapping[str, float],
    masks: MaskSet | None = None,
    *,
    include_bias: bool = False,
    batch_dims: int = 0,
) -> MaskSet:
    """New masks without, in each tensor, its ``round(rate * remaining)`` smallest-magnitude
    kept entries (per network with ``batch_dims``).

    ``rates``: one rate for every tensor, or a mapping of exact tensor names to rates in which
    ``"*"`` covers the names not listed, e.g. ``{"*": 0.2, "net.4.weight": 0.1}`` to prune the
    output layer at half the rate. Tensors that get no rate keep their masks.
    """
    tensors, masks, rows = _prepare(weights, masks, include_bias, batch_dims)
    by_layer = _layer_rates(rates, list(tensors))
    new = {}
    for name, t in tensors.items():
        keep = masks[name].to(t.device)
        if name in by_layer:
            flat = keep.reshape(rows, -1)
            keep = _prune_smallest(_scores(name, t, flat, rows), flat, by_layer[name])
        new[name] = keep.reshape(t.shape)
    return MaskSet(new)


def _check_rule(rule: str) -> None:
    if rule not in RANDOM_RULES:
        raise ValueError(f"unknown density rule {rule!r}; allowed: {', '.join(RANDOM_RULES)}")


def _check_density(density: float, total: int) -> None:
    if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0 < density <= 1:
        raise ValueError(f"density must lie in (0, 1], got {density!r}")
    if round(density * total) == 0:
        raise ValueError(
            f"density {density} keeps none of the {total} prunable entries; allowed: densities in "
            f"(0, 1] with density * {total} > 0.5"
        )


def _capped_proportional(
    sizes: Mapping[str, int], weights: Mapping[str, float], density: float
) -> dict[str, float]:
    """p_l = min(1, eps * w_l) with eps such that sum_l p_l m_l = density * sum_l m_l."""
    budget = density * sum(sizes.values())
    dense: set[str] = set()
    while True:
        rest = [n for n in sizes if n not in dense]
        if not rest:
            return dict.fromkeys(sizes, 1.0)
        eps = (budget - sum(sizes[n] for n in dense)) / sum(weights[n] * sizes[n] for n in rest)
        over = [n for n in rest if eps * weights[n] > 1]
        if not over:
            return {n: 1.0 if n in dense else eps * weights[n] for n in sizes}
        dense.update(over)


def _pyramidal_ratio(sizes: Sequence[int], density: float) -> float:
    """The r in (0, 1] with sum_l m_l r^l = density * sum_l m_l, l from 1."""
    if density == 1:
        return 1.0
    # scipy is imported where it is used: at module level it adds about 60 MiB and a second or
    # two to every process that imports escapelab
    from scipy.optimize import brentq

    total = sum(sizes)

    def excess(r: float) -> float:
        return sum(m * r**depth for depth, m in enumerate(sizes, start=1)) / total - density

    return float(brentq(excess, 0.0, 1.0, xtol=1e-15))


def layer_densities(
    shapes: Mapping[str, Sequence[int]], density: float, rule: str
) -> dict[str, float]:
    """The density p_l that ``rule`` gives each layer (shapes without batch dims) so that
    sum_l p_l m_l = density * sum_l m_l; see the module notes for the rules."""
    _check_rule(rule)
    if not shapes:
        raise ValueError("layer_densities needs at least one layer")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    for name, size in sizes.items():
        if size == 0:
            raise ValueError(f"layer {name!r} has no entries (shape {tuple(shapes[name])})")
    _check_density(density, sum(sizes.values()))
    if rule == "uniform":
        return dict.fromkeys(sizes, float(density))
    if rule == "erk":
        scores = {n: sum(shapes[n]) / sizes[n] for n in sizes}
        return _capped_proportional(sizes, scores, density)
    if rule == "balanced":
        return _capped_proportional(sizes, {n: 1.0 / sizes[n] for n in sizes}, density)
    r = _pyramidal_ratio(list(sizes.values()), density)
    return {n: r**depth for depth, n in enumerate(sizes, start=1)}


def _integer_counts(
    sizes: Mapping[str, int], densities: Mapping[str, float], target: int
) -> dict[str, int]:
    """Counts n_l <= m_l summing to ``target``, each within one of p_l m_l: the floors, plus one
    for the layers of largest remainder (ties to the earlier layer)."""
    exact = {n: densities[n] * sizes[n] for n in sizes}
    counts = {n: min(sizes[n], math.floor(x)) for n, x in exact.items()}
    open_layers = [n for n in sizes if counts[n] < sizes[n]]
    open_layers.sort(key=lambda n: exact[n] - counts[n], reverse=True)
    for name in open_layers[: target - sum(counts.values())]:
        counts[name] += 1
    return counts


@dataclass(frozen=True)
class RandomMasks:
    """Random masks with the rule's per-layer densities p_l and the counts n_l it kept per
    network (the realised densities are ``masks.densities()``)."""

    masks: MaskSet
    rule: str
    density: float
    layer_densities: dict[str, float]
    counts: dict[str, int]


def random_masks(
    weights: Target,
    density: float,
    rule: str = "uniform",
    *,
    generator: torch.Generator | int,
    include_bias: bool = False,
    batch_dims: int = 0,
) -> RandomMasks:
    """Masks keeping ``density`` of the entries, spread over the layers by ``rule`` (one of
    ``RANDOM_RULES``) and drawn uniformly within each layer, independently per network.

    ``generator``: a ``torch.Generator``, or an int seed for a fresh CPU one. Masks are drawn on
    the generator's device and placed on the tensors' (the CPU for meta tensors, so shapes alone
    can be given as ``torch.empty(shape, device="meta")``).
    """
    _check_rule(rule)
    tensors = prunable_tensors(weights, include_bias)
    rows = _batch_shape(tensors, batch_dims).numel()
    shapes = {n: t.shape[batch_dims:] for n, t in tensors.items()}
    densities = layer_densities(shapes, density, rule)
    sizes = {n: s.numel() for n, s in shapes.items()}
    counts = _integer_counts(sizes, densities, round(density * sum(sizes.values())))
    gen = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    masks = {}
    for name, t in tensors.items():
        order = torch.rand(
            rows, sizes[name], generator=gen, dtype=torch.float64, device=gen.device
        ).argsort(dim=1, stable=True)
        keep = torch.zeros(rows, sizes[name], dtype=torch.bool, device=gen.device)
        keep.scatter_(1, order[:, : counts[name]], True)
        device = gen.device if t.device.type == "meta" else t.device
        masks[name] = keep.reshape(t.shape).to(device)
    return RandomMasks(MaskSet(masks), rule, float(density), densities, counts)


def random_masks_like(
    masks: MaskSet, *, generator: torch.Generator | int, batch_dims: int = 0
) -> MaskSet:
    """Random masks with exactly the per-layer counts of ``masks``, network by network: the
    control "random pruning with the same layer-wise densities" of Frankle & Carbin (2019).

    Within each tensor (of each network, with ``batch_dims``) as many entries as ``masks`` keeps
    there are drawn uniformly without replacement.
    """
    rows = _batch_shape(dict(masks), batch_dims).numel()
    gen = torch.Generator().manual_seed(generator) if isinstance(generator, int) else generator
    drawn = {}
    for name, mask in masks.items():
        flat = mask.reshape(rows, -1)
        counts = flat.sum(dim=1).to(gen.device)
        noise = torch.rand(flat.shape, generator=gen, dtype=torch.float64, device=gen.device)
        ranks = noise.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
        drawn[name] = (ranks < counts[:, None]).reshape(mask.shape).to(mask.device)
    return MaskSet(drawn)
