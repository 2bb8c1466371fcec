"""Parameter-space symmetries of fully connected networks, and minima counted modulo them.

A network's function is unchanged by (a) permuting the units of any hidden layer (rows of
``W_l``, entries of ``b_l`` and columns of ``W_{l+1}`` together) and, for odd activations, (b)
flipping the sign of a unit (its incoming weights, bias and outgoing weights). Endpoints of
training that differ only by these symmetries are one minimum, so counting minima needs either a
canonical representative of each orbit (:func:`canonical_form`) or a comparison in function space
(:func:`function_distance`, :func:`group_minima`). The latter is the robust criterion: flat
directions of degenerate minima (redundant or dead units) move the parameters but not the
function. :func:`merge_duplicates` removes such redundancy from a one-hidden-layer network.

Hidden layers are numbered from 0 (``arch.widths[layer]`` units).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture, Layer

_BLOCK = 1024  # rows of the pairwise distance matrix computed at once in group_minima


@dataclass(frozen=True)
class MinimumGroup:
    """Endpoints that are one minimum: indices into the given batch, and what they share.

    ``representative`` is the member with the lowest loss (the first such on ties); ``canonical``
    is its :func:`canonical_form`; ``basin_share`` is the group's fraction of all endpoints.
    """

    representative: int
    members: tuple[int, ...]
    mean_loss: float
    basin_share: float
    canonical: Tensor = dataclasses.field(compare=False)


def _check_layer(arch: Architecture, layer: int) -> int:
    """Width of hidden layer ``layer``; a clear error for an index that is not a hidden layer."""
    if not 0 <= layer < len(arch.widths):
        raise ValueError(f"hidden layer {layer} out of range for widths {arch.widths}")
    return arch.widths[layer]


def _incoming(layer: Layer) -> Tensor:
    """Each unit's incoming weights with its bias appended: (..., units, fan_in [+ 1])."""
    if layer.bias is None:
        return layer.weight
    return torch.cat([layer.weight, layer.bias.unsqueeze(-1)], dim=-1)


def _split_incoming(incoming: Tensor, has_bias: bool) -> Layer:
    """Inverse of :func:`_incoming`."""
    if not has_bias:
        return Layer(incoming, None)
    return Layer(incoming[..., :-1], incoming[..., -1])


def apply_permutation(
    arch: Architecture, theta: Tensor, layer: int, perm: Sequence[int] | Tensor
) -> Tensor:
    """θ with the units of hidden layer ``layer`` reordered: new unit i is old unit perm[i].

    Rows of ``W_l``, entries of ``b_l`` and columns of ``W_{l+1}`` move together, so the function
    is unchanged. ``theta`` is (P,) or (E, P), every member permuted alike; returns a new tensor.
    """
    width = _check_layer(arch, layer)
    p = torch.as_tensor(perm, dtype=torch.long, device=theta.device)
    if p.shape != (width,) or not torch.equal(
        p.sort().values, torch.arange(width, device=p.device)
    ):
        raise ValueError(f"perm must be a permutation of range({width}), got {perm}")
    layers = arch.unflatten(theta)
    cur, nxt = layers[layer], layers[layer + 1]
    layers[layer] = Layer(cur.weight[..., p, :], None if cur.bias is None else cur.bias[..., p])
    layers[layer + 1] = Layer(nxt.weight[..., :, p], nxt.bias)
    return arch.flatten(layers)


def apply_sign_flip(
    arch: Architecture, theta: Tensor, layer: int, units: Sequence[int] | Tensor
) -> Tensor:
    """θ with ``units`` of hidden layer ``layer`` negated: incoming weights, bias, outgoing weights.

    A symmetry only for odd activations (``arch.act.odd``); for others it changes the function.
    ``theta`` is (P,) or (E, P), every member flipped alike; returns a new tensor.
    """
    width = _check_layer(arch, layer)
    s = torch.ones(width, dtype=theta.dtype, device=theta.device)
    s[torch.as_tensor(units, dtype=torch.long, device=theta.device)] = -1.0
    layers = arch.unflatten(theta)
    cur, nxt = layers[layer], layers[layer + 1]
    layers[layer] = Layer(cur.weight * s.unsqueeze(-1), None if cur.bias is None else cur.bias * s)
    layers[layer + 1] = Layer(nxt.weight * s, nxt.bias)
    return arch.flatten(layers)


def _first_sign(v: Tensor, threshold: float) -> Tensor:
    """Sign of each row's first entry with magnitude above ``threshold``; 0 for rows with none.

    Depends on the entries only through their order and magnitudes, so negating a row negates
    its result exactly: the property that makes sign fixing exactly flip-invariant.
    """
    big = v.abs() > threshold
    first = v.gather(-1, big.to(torch.uint8).argmax(dim=-1, keepdim=True)).squeeze(-1)
    return torch.where(big.any(dim=-1), torch.sign(first), torch.zeros_like(first))


def _unit_signs(incoming: Tensor, outgoing: Tensor, tol: float) -> Tensor:
    """The sign (±1) canonicalising each unit, shape (..., units); see :func:`canonical_form`."""
    s = _first_sign(incoming, tol)
    s = torch.where(s == 0, _first_sign(outgoing, tol), s)
    s = torch.where(s == 0, _first_sign(torch.cat([incoming, outgoing], dim=-1), 0.0), s)
    return torch.where(s == 0, torch.ones_like(s), s)


def _lex_order(keys: Tensor) -> Tensor:
    """Indices (E, n) sorting the rows of ``keys`` (E, n, k) lexicographically, ties stable."""
    n_members, n, k = keys.shape
    order = torch.arange(n, device=keys.device).expand(n_members, n)
    for col in range(k - 1, -1, -1):
        column = keys[..., col].gather(-1, order)
        order = order.gather(-1, torch.sort(column, dim=-1, stable=True).indices)
    return order


def canonical_form(arch: Architecture, theta: Tensor, tol: float = 1e-6) -> Tensor:
    """The representative of θ (P,) or of each row of θ (E, P) modulo the network's symmetries.

    Hidden layers are canonicalised from the first to the last, so that when layer l is treated
    the columns of its incoming weights ``W_l`` (layer l-1's units) are already canonical:

    1. Sign (odd activations only): each unit is negated if needed so that the first entry of its
       incoming vector ``(w, b)`` with magnitude above ``tol`` is positive. Incoming rather than
       outgoing weights decide, because outgoing weights are ordered by the next layer, which is
       not canonical yet; this also covers units whose outgoing weights are zero. A unit whose
       incoming entries are all negligible falls back to its outgoing weights, then to its first
       nonzero entry of either.
    2. Order: units are sorted lexicographically by (incoming rounded to multiples of ``tol``,
       outgoing summary rounded, incoming exact, outgoing summary exact). The outgoing summary is
       the outgoing weight vector for the last hidden layer and its magnitudes sorted in
       decreasing order otherwise (invariant to the next layer's symmetries). Rounding first
       keeps floating noise from reordering units that nearly coincide in their incoming weights;
       the exact values then break remaining ties, which makes the result exact.

    ``canonical_form(g(θ)) == canonical_form(θ)`` holds bit for bit for every symmetry g and
    every one-hidden-layer θ. With more hidden layers it holds unless, in a layer before the
    last, two units tie exactly in incoming weights and in sorted outgoing magnitudes, or (odd
    activations) a unit has no incoming entry above ``tol``: then the next layer's symmetries
    can leak into the order or sign. Generic θ never does. The function is unchanged up to float
    rounding (only negations and reorderings are applied). -0.0 becomes 0.0.
    """
    if theta.dim() not in (1, 2):
        raise ValueError(f"theta must be (P,) or (E, P), got shape {tuple(theta.shape)}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    batch = theta if theta.dim() == 2 else theta.unsqueeze(0)
    layers = arch.unflatten(batch)
    n_hidden = len(arch.widths)
    for k in range(n_hidden):
        cur, nxt = layers[k], layers[k + 1]
        incoming = _incoming(cur)
        outgoing = nxt.weight.transpose(-1, -2)
        if arch.act.odd:
            s = _unit_signs(incoming, outgoing, tol).unsqueeze(-1)
            incoming, outgoing = incoming * s, outgoing * s
        summary = outgoing
        if k < n_hidden - 1:
            summary = outgoing.abs().sort(dim=-1, descending=True).values
        keys = torch.cat(
            [torch.round(incoming / tol), torch.round(summary / tol), incoming, summary], dim=-1
        )
        order = _lex_order(keys).unsqueeze(-1)
        incoming = incoming.gather(-2, order.expand_as(incoming))
        outgoing = outgoing.gather(-2, order.expand_as(outgoing))
        layers[k] = _split_incoming(incoming, cur.bias is not None)
        layers[k + 1] = Layer(outgoing.transpose(-1, -2), nxt.bias)
    out = arch.flatten(layers) + 0.0
    return out if theta.dim() == 2 else out.squeeze(0)


def merge_duplicates(
    arch: Architecture, theta: Tensor, tol: float = 1e-6
) -> tuple[Architecture, Tensor]:
    """Reduce a one-hidden-layer network θ (P,) to fewer units computing the same function.

    Greedily, in unit order, each unit not yet merged absorbs every later one whose incoming
    vector ``(w, b)`` lies within ``tol`` of its own in max-norm (outgoing weights added) or, for
    odd activations, of its negation (outgoing weights subtracted). A merged unit is then dropped
    if its outgoing weights are all within ``tol`` of zero, or if its incoming entries are and the
    activation vanishes at 0 (the unit outputs nothing). At least one unit is kept (with zero
    outgoing weights if all were dropped). Returns the narrower architecture and its θ; the
    function changes only by terms of order ``tol``, not at all for exact duplicates.
    """
    if len(arch.widths) != 1:
        raise ValueError(f"merge_duplicates needs one hidden layer, got widths {arch.widths}")
    if theta.dim() != 1:
        raise ValueError(f"theta must be a single network (P,), got shape {tuple(theta.shape)}")
    hidden, out = arch.unflatten(theta)
    incoming = _incoming(hidden)
    outgoing = out.weight.t()
    same = torch.cdist(incoming, incoming, p=math.inf) <= tol
    opposite = torch.cdist(incoming, -incoming, p=math.inf) <= tol
    silent_at_zero = float(arch.act.fn(torch.zeros((), dtype=theta.dtype))) == 0.0
    merged = [False] * len(incoming)
    kept_units, kept_out = [], []
    for i in range(len(incoming)):
        if merged[i]:
            continue
        total = outgoing[i].clone()
        for j in range(i + 1, len(incoming)):
            if merged[j]:
                continue
            if same[i, j]:
                total += outgoing[j]
            elif arch.act.odd and opposite[i, j]:
                total -= outgoing[j]
            else:
                continue
            merged[j] = True
        dead = silent_at_zero and bool(incoming[i].abs().max() <= tol)
        if bool(total.abs().max() > tol) and not dead:
            kept_units.append(i)
            kept_out.append(total)
    if not kept_units:
        kept_units, kept_out = [0], [torch.zeros_like(outgoing[0])]
    new_arch = dataclasses.replace(arch, widths=(len(kept_units),))
    new_hidden = _split_incoming(incoming[kept_units], hidden.bias is not None)
    new_out = Layer(torch.stack(kept_out, dim=1), out.bias)
    return new_arch, new_arch.flatten([new_hidden, new_out])


def probe_inputs(d: int, n: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """n standard Gaussian inputs (n, d) drawn from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=dtype)


def _outputs(arch: Architecture, thetas: Tensor, probes: Tensor) -> Tensor:
    """Float64 outputs on the probes, flattened per member: (E, N * d_out)."""
    if probes.dim() != 2 or probes.shape[1] != arch.d_in:
        raise ValueError(f"probes must be (N, {arch.d_in}), got shape {tuple(probes.shape)}")
    f = arch.forward(thetas.to(torch.float64), probes.to(thetas.device, torch.float64))
    return f.reshape(f.shape[0], -1)


def function_distance(
    arch_a: Architecture, theta_a: Tensor, arch_b: Architecture, theta_b: Tensor, probes: Tensor
) -> float:
    """RMS difference of two networks' outputs over the probe inputs (N, d) and output units.

    The architectures may differ (e.g. before and after :func:`merge_duplicates`) but must share
    d_in and d_out. Computed in float64.
    """
    if (arch_a.d_in, arch_a.d_out) != (arch_b.d_in, arch_b.d_out):
        raise ValueError("the two networks must share d_in and d_out")
    if theta_a.dim() != 1 or theta_b.dim() != 1:
        raise ValueError("function_distance compares two single networks, thetas of shape (P,)")
    fa = _outputs(arch_a, theta_a.unsqueeze(0), probes)
    fb = _outputs(arch_b, theta_b.unsqueeze(0), probes)
    return float((fa - fb).square().mean().sqrt())


def _group_labels(
    arch: Architecture, thetas: Tensor, tol_function: float, probes: Tensor
) -> np.ndarray:
    """Single-linkage cluster label of each member; see :func:`group_minima`."""
    if thetas.dim() != 2:
        raise ValueError(f"thetas must be (E, P), got shape {tuple(thetas.shape)}")
    if len(thetas) == 0:
        return np.zeros(0, dtype=np.int64)
    f = _outputs(arch, thetas, probes)
    finite = torch.isfinite(f).all(dim=1)
    scale = float(f[finite].square().mean().sqrt()) if bool(finite.any()) else 0.0
    threshold = tol_function * scale * math.sqrt(f.shape[1])  # RMS to Euclidean distance
    rows, cols = [], []
    for start in range(0, len(f), _BLOCK):
        dist = torch.cdist(
            f[start : start + _BLOCK], f, compute_mode="donot_use_mm_for_euclid_dist"
        )
        i, j = (dist <= threshold).nonzero(as_tuple=True)
        rows.append(i.cpu().numpy() + start)
        cols.append(j.cpu().numpy())
    n = len(f)
    edges = np.ones(sum(len(r) for r in rows), dtype=bool)
    # scipy is imported where it is used: at module level it adds about 60 MiB and a second or
    # two to every process that imports escapelab
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((edges, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _nan_last(x: float) -> float:
    """Sort key that puts NaN after every number."""
    return math.inf if math.isnan(x) else x


def group_minima(
    arch: Architecture,
    thetas: Tensor,
    losses: Tensor | Sequence[float],
    tol_function: float,
    probes: Tensor,
) -> list[MinimumGroup]:
    """Group endpoints θ (E, P) that are the same minimum, judged in function space.

    Two endpoints are linked when the RMS difference of their outputs on ``probes`` (N, d_in) is
    at most ``tol_function`` times the output scale (the RMS of all finite endpoints' outputs);
    groups are the connected components of these links (single linkage: order-independent, and
    points spread along a flat valley of one minimum join through their neighbours). Endpoints
    with non-finite outputs stay alone. Groups come sorted by mean loss (NaN last), then by first
    member.
    """
    labels = _group_labels(arch, thetas, tol_function, probes)
    loss = torch.as_tensor(losses, dtype=torch.float64).reshape(-1).cpu()
    if len(loss) != len(thetas):
        raise ValueError(f"{len(loss)} losses for {len(thetas)} endpoints")
    groups = []
    for label in np.unique(labels):
        members = tuple(int(i) for i in np.flatnonzero(labels == label))
        member_loss = loss[list(members)]
        best = members[int(torch.argmin(torch.nan_to_num(member_loss, nan=math.inf)))]
        groups.append(
            MinimumGroup(
                representative=best,
                members=members,
                mean_loss=float(member_loss.mean()),
                basin_share=len(members) / len(thetas),
                canonical=canonical_form(arch, thetas[best]),
            )
        )
    return sorted(groups, key=lambda g: (_nan_last(g.mean_loss), g.members[0]))


def count_distinct(arch: Architecture, thetas: Tensor, tol_function: float, probes: Tensor) -> int:
    """Number of distinct minima among endpoints θ (E, P), grouped as in :func:`group_minima`."""
    return len(np.unique(_group_labels(arch, thetas, tol_function, probes)))
