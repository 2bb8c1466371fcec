"""Counts of symmetry-induced affine subspaces (experiment E5, theory part).

Reference: B. Şimşek, F. Ged, A. Jacot, F. Spadaro, C. Hongler, W. Gerstner, J. Brea, "Geometry of
the Loss Landscape in Overparameterized Neural Networks: Symmetries and Invariances", ICML 2021,
PMLR 139:9722-9732 (arXiv:2105.12221). The abstract states: for a two-layer student of width
m = r* + h the global-minimum manifold consists of T(r*, m) affine subspaces of dimension at
least h; G(r, m) affine subspaces of symmetry-induced critical points in width m come from one
critical point of a width-r network, r < r*; the G-subspaces outnumber the T-subspaces for small
h and the reverse holds for h >> r*. Only the abstract could be checked, not the theorem
statements, so the formulas below are derived from a counting model of our own, and that model
counts only the constructions that were *measured* to give critical points.

Measurement (:mod:`escapelab.landscape.critical_subspaces`). A certified critical point
(gradient infinity norm <= 1e-12, float64, exact population loss) of a width-r student is
embedded in widths r + 1 and r + 2 by each construction, five random points of each resulting
affine subspace are drawn, and the exact gradient is evaluated there. Measured with
``escapelab counts --verify --verify-teachers 4 --verify-activation erf`` (and ``relu``): d = 3,
r* = 3, 4 teachers; the teachers themselves are the global minima (loss 0) and 12 (erf) or 13
(relu) distinct certified endpoints of width-2 students the non-global points (loss 3.0e-6 ..
3.2e-3 for erf, 1.3e-5 .. 3.6 for relu); 220 and 209 embedded subspaces:

* duplication -- copies of a unit share its incoming weight, their output weights split its
  output weight with random factors summing to 1 (most outside [0, 1]): critical at global and
  non-global points alike, max |grad| 2.7e-15 (the splitting argument of Fukumizu & Amari,
  Neural Networks 13:317-327, 2000);
* zero-output units with a free incoming weight, and cancelling groups (units sharing a free
  incoming weight, output weights summing to 0): critical at global minima (max |grad|
  4.4e-16), refuted at non-global points (max |grad| at least 6.6e-5 and 1.2e-4 in every case,
  up to 3.0: dL/da_j = E[(f - y) sigma(w_j . x)] does not vanish when f != y);
* activation-specific constructions, measured but not counted here: a zero unit (a_j = 0,
  w_j = 0) is critical everywhere when sigma(0) = 0 (erf, relu; max |grad| 4.4e-16);
  sign-flipped copies (-W_i, the output weight's sign flipped) are critical for odd sigma (erf:
  1.0e-15) and not for relu (at least 0.51); a unit with w_j = 0 and a free output weight is
  refuted at non-global points (at least 4.4e-5) and, when sigma(0) = 0, critical at global
  minima.

The counts below use the constructions critical for every activation and leave the
activation-specific ones out, so for sigma(0) = 0 or odd sigma (erf and relu as measured; tanh
by the same argument) they are lower bounds. Counting zero units in G
as well (sigma(0) = 0) would give G(r, m) = sum_k C(m, k) r! S(m - k, r): numerically the G of an
earlier model, which counted zero-output units with *free* incoming weights at non-global
points (refuted above; crossovers 3, 5, 6, 8, 9 for r* = 2 .. 6) -- the same number of
subspaces, of lower dimension (w_j pinned to 0). Sign flips would multiply G and T again.

Counting model. A width-r network with r distinct units (incoming weights W_1..W_r, non-zero,
pairwise distinct; output weights A_1..A_r non-zero) is embedded in width m by a partition of
the m labelled student units into r *copy groups*, labelled 1..r, and any number of unlabelled
*cancelling groups*. The units of copy group i have w_j = W_i and output weights summing to A_i;
the units of a cancelling group share one free incoming weight and have output weights summing
to 0 (a singleton is a zero-output unit: a_j = 0, w_j free). Distinct partitions give distinct
subspaces, none containing another: the equalities w_j = W_i and the ties between free incoming
weights can be read off a subspace, so a containment would need the same copy groups and a
coarser tying of the free units, whose single sum-zero constraint does not imply those of the
finer groups.

* At a global minimum (f = y) every such partition gives critical points, so

      T(r*, m) = sum_{k=0}^{m-r*} C(m, k) r*! S(m - k, r*) B(k) = sum_j (j)_{r*} S(m, j),

  with S the Stirling numbers of the second kind, B the Bell numbers (the partitions of the k
  units outside the copy groups into cancelling groups) and (j)_{r*} = j! / (j - r*)! (the
  second form: choose the r* labelled blocks among the j blocks of a partition of the m units).
* At a critical point of non-zero loss only the partitions without cancelling groups do:
  G(r, m) = r! S(m, r) ~ r^m.

T(r*, m) grows at least like (r* + 1)^m (the partitions whose cancelling groups are singletons
alone number sum_j (-1)^j C(r*, j) (r* + 1 - j)^m) and sum_{r<r*} G(r, m) like (r* - 1)^m, so the
saddle/global ratio falls through 1 at a crossover width: m = 2, 4, 5, 6, 8 for r* = 2 .. 6
(for r* = 2 the single saddle subspace G(1, m) = 1 never outnumbers T(2, m) >= 2). Counting the
cancelling groups of two or more units changes no crossover (T without them gives the same
widths for r* = 2 .. 8). The earlier model (above) was removed.

Everything here is exact integer arithmetic, without plotting: :func:`counts_table` computes what
``escapelab counts`` prints, and :mod:`escapelab.report.counts` draws and writes it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from escapelab.config import SpecError

Equation = tuple[str, int | frozenset[int], int]


def _check(**values: int) -> None:
    """Raise ValueError unless every value is a non-negative int."""
    for name, value in values.items():
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def stirling2(n: int, k: int) -> int:
    """Stirling number of the second kind S(n, k): partitions of n labelled items into k blocks."""
    _check(n=n, k=k)
    surjections = sum((-1) ** j * math.comb(k, j) * (k - j) ** n for j in range(k + 1))
    return surjections // math.factorial(k)


def bell(n: int) -> int:
    """Bell number B(n) = sum_k S(n, k): all partitions of n labelled items."""
    _check(n=n)
    return sum(stirling2(n, k) for k in range(n + 1))


def count_global_subspaces(r_star: int, m: int) -> int:
    """T(r*, m) = sum_k C(m, k) r*! S(m - k, r*) B(k): affine pieces of the global-minimum
    manifold made of copy groups and cancelling groups (module docstring)."""
    _check(r_star=r_star, m=m)
    return sum(
        math.comb(m, k) * math.factorial(r_star) * stirling2(m - k, r_star) * bell(k)
        for k in range(m - r_star + 1)
    )


def count_critical_subspaces(r: int, m: int) -> int:
    """G(r, m) = r! S(m, r): duplication subspaces in width m of one width-r critical point of
    non-zero loss, the only construction measured to stay critical there (module docstring)."""
    _check(r=r, m=m)
    return math.factorial(r) * stirling2(m, r)


def _subspace_equations(
    assignment: tuple[int, ...], r: int, cancelling: bool
) -> frozenset[Equation]:
    """The defining equations of the subspace of one map of the units to group labels.

    Labels 1..r are copy groups: ("w", j, i) says w_j = W_i, ("sum", units, i) that their output
    weights sum to A_i. With ``cancelling``, labels above r name cancelling groups, which are
    unlabelled: ("tie", units, 0) says their incoming weights are equal, ("sum", units, 0) that
    their output weights sum to 0, so two maps that differ only in those names give one subspace.
    """
    equations: set[Equation] = set()
    for label in set(assignment):
        units = frozenset(j for j, value in enumerate(assignment) if value == label)
        if label <= r:
            equations.update(("w", j, label) for j in units)
            equations.add(("sum", units, label))
        elif cancelling:
            equations.update({("tie", units, 0), ("sum", units, 0)})
    return frozenset(equations)


def brute_force_count(r: int, m: int, *, zero_loss: bool) -> int:
    """Count distinct subspaces by enumerating every map of the m units to group labels.

    zero_loss=True counts T's subspaces (labels 1..r for copy groups, r+1..r+m for cancelling
    groups), zero_loss=False G's (copy groups only); maps missing a label 1..r are discarded.
    Cost (r + m)^m or r^m: for small cases only.
    """
    _check(r=r, m=m)
    labels = range(1, r + m + 1) if zero_loss else range(1, r + 1)
    required = set(range(1, r + 1))
    subspaces = {
        _subspace_equations(assignment, r, zero_loss)
        for assignment in itertools.product(labels, repeat=m)
        if required <= set(assignment)
    }
    return len(subspaces)


def count_saddle_subspaces(r_star: int, m: int) -> int:
    """sum_{r=1}^{r*-1} G(r, m): critical subspaces from all narrower networks."""
    _check(r_star=r_star, m=m)
    return sum(count_critical_subspaces(r, m) for r in range(1, r_star))


def _check_teacher(r_star: int) -> None:
    """The saddle/global comparison needs at least one narrower network, so r* >= 2."""
    if not isinstance(r_star, int) or r_star < 2:
        raise ValueError(f"r_star must be an integer >= 2, got {r_star!r}")


def crossover_width(r_star: int) -> int:
    """Smallest width m >= r* with sum_{r<r*} G(r, m) < T(r*, m).

    Global-minimum subspaces outnumber the saddle subspaces from there on; the search ends because
    the ratio tends to 0 (module docstring). The crossover equals r* when saddle subspaces never
    outnumber the global ones (r* = 2).
    """
    _check_teacher(r_star)
    m = r_star
    while count_saddle_subspaces(r_star, m) >= count_global_subspaces(r_star, m):
        m += 1
    return m


def symmetry_table(r_star: int, widths: Iterable[int]) -> list[dict[str, int | float]]:
    """One row per width m >= r*: m, T, G (summed over r < r*), ratio G / T and their log10."""
    _check_teacher(r_star)
    rows: list[dict[str, int | float]] = []
    for m in widths:
        if not isinstance(m, int) or m < r_star:
            raise ValueError(f"widths must be integers >= r_star = {r_star}, got {m!r}")
        t = count_global_subspaces(r_star, m)
        g = count_saddle_subspaces(r_star, m)
        rows.append(
            {
                "m": m,
                "T": t,
                "G": g,
                "ratio": float(Fraction(g, t)),
                "log10_T": math.log10(t),
                "log10_G": math.log10(g),
                "log10_ratio": math.log10(g) - math.log10(t),
            }
        )
    return rows


@dataclass(frozen=True)
class CountsTable:
    """The result of :func:`counts_table`: its inputs, the crossover per r* and the rows.

    ``rows`` holds, for each r* in the order given, one row per width m = r* .. max(max_width, r*)
    with the keys r_star, crossover, then those of :func:`symmetry_table` (m, T, G, ratio,
    log10_T, log10_G, log10_ratio). ``crossovers`` maps each r* to :func:`crossover_width`.
    """

    r_stars: tuple[int, ...]
    max_width: int
    crossovers: dict[int, int]
    rows: list[dict[str, int | float]]

    @property
    def widths(self) -> list[int]:
        """The width axis of the figure: 2 .. max_width (each curve keeps its m >= r*)."""
        return list(range(2, self.max_width + 1))

    def dominance(self, r_star: int) -> str:
        """Where saddle subspaces outnumber global-minimum ones, in words: "up to m = M" or
        "at no width m >= r*" (when the crossover is r* itself)."""
        cross = self.crossovers[r_star]
        return f"up to m = {cross - 1}" if cross > r_star else f"at no width m >= {r_star}"


def counts_table(r_stars: Iterable[int], max_width: int) -> CountsTable:
    """Subspace counts T(r*, m), G and their ratio for several teacher widths r* (E5's table).

    What ``escapelab counts`` prints and writes: for each r* (>= 2, order and repeats kept) the
    widths m = r* .. max(max_width, r*) and the crossover width. Raises :class:`SpecError`
    (a ValueError) naming ``r_stars`` or ``max_width`` when one is not an integer >= 2, before
    any counting.
    """
    teachers = tuple(r_stars)
    if not teachers:
        raise SpecError("r_stars", "give at least one teacher width")
    if not all(isinstance(r, int) and not isinstance(r, bool) for r in teachers):
        raise SpecError("r_stars", f"teacher widths must be integers, got {list(teachers)!r}")
    if min(teachers) < 2:
        raise SpecError("r_stars", "teacher widths must be >= 2 (r* = 1 has no narrower network)")
    if not isinstance(max_width, int) or isinstance(max_width, bool) or max_width < 2:
        raise SpecError("max_width", f"must be an integer >= 2, got {max_width!r}")
    crossovers = {r: crossover_width(r) for r in dict.fromkeys(teachers)}
    rows: list[dict[str, int | float]] = []
    for r_star in teachers:
        widths = range(r_star, max(max_width, r_star) + 1)
        for row in symmetry_table(r_star, widths):
            rows.append({"r_star": r_star, "crossover": crossovers[r_star], **row})
    return CountsTable(teachers, max_width, crossovers, rows)


__all__ = [
    "CountsTable",
    "bell",
    "brute_force_count",
    "count_critical_subspaces",
    "count_global_subspaces",
    "count_saddle_subspaces",
    "counts_table",
    "crossover_width",
    "stirling2",
    "symmetry_table",
]
