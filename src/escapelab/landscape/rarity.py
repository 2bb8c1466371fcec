"""How rare bad minima are: Hessian indices, the piece of the global-minimum manifold a student
reached, the pieces counted modulo the student's permutations, and the fit of P(index = 0)
against the parameter count (issue 16, ``minima-rarity``).

Global-minimum pieces. At a global minimum of a one-hidden-layer student of width m fitting a
teacher of width r*, every student unit either *copies* a teacher unit (same incoming weights;
for odd activations up to sign) or is *free*: free units sharing one incoming weight form a
*cancelling group* (output weights summing to 0; a singleton is a zero-output unit), and a unit
with zero incoming weights is *silent* when sigma(0) = 0. These are the affine pieces counted by
T(r*, m) (:func:`escapelab.theory.symmetry_counts.count_global_subspaces`), silent units aside
(an activation-specific construction T leaves out). :func:`global_piece` reads off the piece of
an endpoint modulo the permutations (and sign flips) of the student's units: the number of
copies of each teacher unit, in the teacher's order, and the sizes of the cancelling groups;
:func:`piece_orbits` counts the possible labels, and :func:`orbit_size` the labelled pieces one
label stands for (they sum to T).

Index decay. A proposal in a discussion of the overparameterization paper: the chance that a
critical point has no negative Hessian eigenvalue falls exponentially with the parameter count
P. :func:`fit_index_decay` fits log P(index = 0) = a + b P by binomial maximum likelihood,
with a bootstrap interval for b over teachers and a deviance test of the log-linear form.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture

UNRESOLVED = "unresolved"


def hessian_index(eigs: Tensor, tol_eig: float) -> int:
    """Number of eigenvalues (ascending, as from eigvalsh) below -``tol_eig`` times the
    magnitude of the largest one: the Hessian index with a tolerance relative to the spectrum."""
    scale = max(abs(float(eigs[-1])), torch.finfo(torch.float64).tiny)
    return int((eigs < -tol_eig * scale).sum())


def _units(arch: Architecture, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Incoming vectors (with bias) (m, d [+ 1]) and output weights (m,) of a one-output,
    one-hidden-layer network."""
    if len(arch.widths) != 1 or arch.d_out != 1:
        raise ValueError(f"needs one hidden layer and one output, got {arch.widths}, {arch.d_out}")
    hidden, out = arch.unflatten(theta.to(torch.float64))
    incoming = (
        hidden.weight
        if hidden.bias is None
        else torch.cat([hidden.weight, hidden.bias[:, None]], 1)
    )
    return incoming, out.weight.reshape(-1)


def global_piece(
    arch: Architecture,
    theta: Tensor,
    teacher_arch: Architecture,
    teacher_theta: Tensor,
    tol: float = 0.05,
) -> str:
    """The label of the global-minimum piece a student θ (P,) lies on, modulo permutations of
    its units (and sign flips, for odd activations): ``copies=c1.c2...`` (copies of each teacher
    unit, in the teacher's order), then ``|cancel=s1.s2...`` (sizes of the cancelling groups,
    descending) and ``|silent=k`` (units with zero incoming weights, sigma(0) = 0) when present.

    Weights are compared in max-norm relative to the teacher's largest incoming entry (``tol``),
    output sums relative to its largest output weight. A θ that does not decompose so (a teacher
    unit without copies, a copy group or cancelling group whose outputs do not sum to the
    teacher's or to zero) gets ``unresolved`` with what was seen, e.g. near but not on a piece.
    """
    u, a = _units(arch, theta)
    v, c = _units(teacher_arch, teacher_theta)
    odd = arch.act.odd
    w_scale = float(v.abs().max())
    a_scale = float(c.abs().max())
    silent_at_zero = float(arch.act.fn(torch.zeros((), dtype=torch.float64))) == 0.0
    dist = torch.cdist(u, v, p=math.inf)
    sign = torch.ones_like(dist)
    if odd:
        flipped = torch.cdist(u, -v, p=math.inf)
        sign = torch.where(flipped < dist, -1.0, 1.0)
        dist = torch.minimum(dist, flipped)
    copies = [0] * len(v)
    sums = [0.0] * len(v)
    free = []
    silent = 0
    for j in range(len(u)):
        i = int(dist[j].argmin())
        if float(dist[j, i]) <= tol * w_scale:
            copies[i] += 1
            sums[i] += float(sign[j, i] * a[j])
        elif silent_at_zero and float(u[j].abs().max()) <= tol * w_scale:
            silent += 1
        else:
            free.append(j)
    resolved = all(copies) and all(
        abs(s - float(ci)) <= tol * a_scale for s, ci in zip(sums, c.tolist(), strict=True)
    )
    cancel = []
    left = list(free)
    while left:
        j = left.pop(0)
        group, total = [j], float(a[j])
        for k in list(left):
            same = float((u[k] - u[j]).abs().max()) <= tol * w_scale
            opposite = odd and float((u[k] + u[j]).abs().max()) <= tol * w_scale
            if same or opposite:
                group.append(k)
                total += float(a[k]) if same else -float(a[k])
                left.remove(k)
        resolved = resolved and abs(total) <= tol * a_scale
        cancel.append(len(group))
    label = "copies=" + ".".join(map(str, copies))
    if cancel:
        label += "|cancel=" + ".".join(map(str, sorted(cancel, reverse=True)))
    if silent:
        label += f"|silent={silent}"
    return label if resolved else f"{UNRESOLVED}:{label}"


def _partitions(n: int, largest: int | None = None) -> list[tuple[int, ...]]:
    """Integer partitions of n, parts descending."""
    largest = n if largest is None else largest
    if n == 0:
        return [()]
    return [
        (first, *rest)
        for first in range(min(n, largest), 0, -1)
        for rest in _partitions(n - first, first)
    ]


def piece_orbits(r_star: int, m: int) -> int:
    """How many labels :func:`global_piece` can give the T(r*, m) pieces: the pieces modulo the
    m! permutations of the student's units, sum_k C(m - k - 1, r* - 1) p(k) over k free units
    (copy-group sizes a composition of m - k into r* parts, cancelling groups a partition of k)."""
    if m < r_star:
        return 0
    return sum(
        math.comb(m - k - 1, r_star - 1) * len(_partitions(k)) for k in range(m - r_star + 1)
    )


def orbit_size(copies: Sequence[int], cancel: Sequence[int]) -> int:
    """The labelled T-pieces one label stands for: m! / (prod c_i! prod s_j! prod mult(s)!),
    with copy groups labelled by the teacher's units and cancelling groups unlabelled."""
    m = sum(copies) + sum(cancel)
    denom = math.prod(math.factorial(x) for x in (*copies, *cancel))
    denom *= math.prod(math.factorial(k) for k in Counter(cancel).values())
    return math.factorial(m) // denom


@dataclass(frozen=True)
class IndexFit:
    """log P(index = 0) = intercept + slope * P, fitted to binomial counts; slope interval by
    bootstrap over teachers (nan when too few groups; intercept and slope nan too when index 0
    is seen at fewer than two parameter counts or everywhere, where the likelihood's maximum
    lies on its boundary and identifies no slope); deviance against one free rate per
    parameter count, its degrees of freedom and p-value; ``verdict`` in words."""

    slope: float
    slope_low: float
    slope_high: float
    intercept: float
    deviance: float
    df: int
    gof_p: float
    points: int
    index_zero: int
    n_params: tuple[int, ...]
    verdict: str


def _nll(params: np.ndarray, x: np.ndarray, k: np.ndarray, n: np.ndarray) -> float:
    """Binomial negative log-likelihood of log p = a + b x (p capped just below 1)."""
    eta = np.minimum(params[0] + params[1] * x, -1e-12)
    return float(-(k * eta).sum() - ((n - k) * np.log1p(-np.exp(eta))).sum())


def _fit(x: np.ndarray, k: np.ndarray, n: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """(intercept, slope) by maximum likelihood: damped Newton on the convex negative
    log-likelihood inside the region where every p < 1, from least squares on smoothed logs
    shifted into that region. A maximum on the boundary (p = 1 at some x, where k = n) is
    approached to within the step halvings."""
    y = np.log((k + 0.5) / (n + 1.0))
    slope, a = np.polyfit(x, y, 1) if len(set(x.tolist())) > 1 else (0.0, float(y.mean()))
    theta = np.array([a, slope], dtype=float)
    theta[0] -= max(0.0, float((theta[0] + theta[1] * x).max())) + 1e-3
    design = np.stack([np.ones_like(x), x], axis=1)
    value = _nll(theta, x, k, n)
    for _ in range(iterations):
        p = np.exp(design @ theta)
        grad = design.T @ (-k + (n - k) * p / (1.0 - p))
        weight = (n - k) * p / (1.0 - p) ** 2
        hess = design.T @ (design * weight[:, None]) + 1e-12 * np.eye(2)
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            step = grad
        t = 1.0
        while t > 1e-12:
            trial = theta - t * step
            if float((design @ trial).max()) < 0 and _nll(trial, x, k, n) <= value:
                break
            t /= 2
        else:
            break
        moved = float(np.abs(trial - theta).max())
        theta, value = trial, _nll(trial, x, k, n)
        if moved < 1e-12:
            break
    return float(theta[0]), float(theta[1])


def _saturated_deviance(x: np.ndarray, k: np.ndarray, n: np.ndarray, a: float, b: float) -> float:
    """Deviance of the log-linear fit against one free rate per parameter count."""
    q = k / n
    with np.errstate(divide="ignore", invalid="ignore"):
        sat = np.where(k > 0, k * np.log(q), 0.0) + np.where(n > k, (n - k) * np.log1p(-q), 0.0)
    return max(0.0, 2.0 * (float(sat.sum()) + _nll(np.array([a, b]), x, k, n)))


def _pooled(groups: Sequence[tuple[object, int, int, int]]) -> tuple[np.ndarray, ...]:
    """(parameter counts, index-zero counts, totals) summed over groups, counts with points."""
    tally: dict[int, list[int]] = {}
    for _, p, n, k in groups:
        tally.setdefault(int(p), [0, 0])
        tally[int(p)][0] += k
        tally[int(p)][1] += n
    xs = sorted(p for p, (_, n) in tally.items() if n > 0)
    return (
        np.array(xs, dtype=float),
        np.array([tally[p][0] for p in xs], dtype=float),
        np.array([tally[p][1] for p in xs], dtype=float),
    )


def fit_index_decay(
    groups: Sequence[tuple[object, int, int, int]],
    bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> IndexFit:
    """Fit log P(index = 0) = a + b P to ``groups`` of (teacher, P, critical points, of which
    index 0); the interval of b resamples the teachers with replacement ``bootstrap`` times.

    Verdict on the exponential-decay proposal: ``not resolved`` with fewer than three parameter
    counts, index-0 points at fewer than two of them, index 0 everywhere (P = 1 fits at every
    count, so no slope is identified), or an interval for b that contains 0;
    ``rejected`` when b's interval lies above 0 or the log-linear form fails the deviance test
    at the 5 % level; ``supported`` when the interval lies below 0 and the form passes.
    """
    # scipy is imported where it is used: at module level it adds about 60 MiB and a second or
    # two to every process that imports escapelab
    from scipy.stats import chi2

    x, k, n = _pooled(groups)
    nan = float("nan")
    if len(x) < 2:
        return IndexFit(
            nan,
            nan,
            nan,
            nan,
            nan,
            0,
            nan,
            int(n.sum()),
            int(k.sum()),
            tuple(int(v) for v in x),
            "not resolved: fewer than two parameter counts",
        )
    a, b = _fit(x, k, n)
    dev = _saturated_deviance(x, k, n, a, b)
    df = len(x) - 2
    gof = float(chi2.sf(dev, df)) if df > 0 else nan
    teachers = sorted({g[0] for g in groups}, key=str)
    slopes = []
    if len(teachers) > 1 and bootstrap > 0:
        rng = np.random.default_rng(seed)
        by_teacher = {t: [g for g in groups if g[0] == t] for t in teachers}
        for _ in range(bootstrap):
            pick = rng.integers(0, len(teachers), len(teachers))
            sample = [g for i in pick for g in by_teacher[teachers[i]]]
            bx, bk, bn = _pooled(sample)
            if len(bx) >= 2:
                slopes.append(_fit(bx, bk, bn)[1])
    lo = hi = nan
    if len(slopes) >= 10:
        tail = 100 * (1 - level) / 2
        lo, hi = (float(v) for v in np.percentile(slopes, [tail, 100 - tail]))
    if len(x) < 3 or (k > 0).sum() < 2 or k.sum() == n.sum() or math.isnan(lo):
        verdict = "not resolved: " + (
            "fewer than three parameter counts"
            if len(x) < 3
            else "index 0 seen at fewer than two parameter counts"
            if (k > 0).sum() < 2
            else "every critical point has index 0 (no slope is identified)"
            if k.sum() == n.sum()
            else "too few teachers for an interval"
        )
        if (k > 0).sum() < 2 or k.sum() == n.sum():  # the maximum is on the boundary
            a = b = lo = hi = dev = gof = nan
    elif lo > 0:
        verdict = "rejected: P(index 0) rises with the parameter count"
    elif not math.isnan(gof) and gof < 0.05:
        verdict = "rejected: P(index 0) is not log-linear in the parameter count"
    elif hi < 0:
        verdict = "supported"
    else:
        verdict = "not resolved: the slope's interval contains 0"
    return IndexFit(
        b, lo, hi, a, dev, df, gof, int(n.sum()), int(k.sum()), tuple(int(v) for v in x), verdict
    )
