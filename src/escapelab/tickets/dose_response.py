"""Dose–response of winning tickets: failure rate against the size of a perturbation, against
the noise floor, with the threshold dose where failure departs from it.

A *dose* is one perturbation of :mod:`escapelab.tickets.perturb` (scale by alpha, noise of size
sigma). Each dose is tallied as ``failures`` of ``n`` decided tickets (plus those left undecided,
e.g. out of budget, counted apart) and compared with the *floor*: the failure rate of the same
tickets under no change of their initialization at all. Per dose:

* the failure rate with its Wilson 95 % interval (Wilson 1927) and the interval's half-width,
  against a target half-width (``resolved``);
* the difference from the floor with Newcombe's hybrid score interval and its half-width
  against the same target. Every ticket is run both under the dose and under the floor, so
  when the per-ticket outcomes are given (``Pairs``), the interval is the *paired* one
  (Newcombe 1998b, method 10: the two Wilson intervals combined with the correlation of the
  paired outcomes), over the tickets decided under both; it is narrower than the independent
  one in so far as a ticket that fails under the floor also fails under the dose. Without
  pairs it is the independent-samples interval (Newcombe 1998a, method 10), about sqrt(2)
  times the rates' half-width when dose and floor have the same n;
* ``above_floor``: the difference's interval lies entirely above 0.

The doses fall into three *arms*, each ordered by its distance from "no perturbation": ``scale
down`` (alpha < 1, from 1 towards 0), ``scale up`` (alpha > 1) and ``noise`` (sigma > 0). The
*threshold* of an arm is its first dose, in that order, whose difference lies above the floor.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from escapelab.theory.multistart import wilson_interval

ARMS: tuple[str, ...] = ("scale down", "scale up", "noise")
# the target the issue sets: the 95 % interval of every dose's rate no wider than +-0.05
TARGET_HALF_WIDTH = 0.05


def newcombe_interval(
    k1: int, n1: int, k2: int, n2: int, z: float = 1.959963984540054
) -> tuple[float, float]:
    """The hybrid score interval of p1 - p2 = k1/n1 - k2/n2 (Newcombe 1998, method 10): with
    (l_i, u_i) the Wilson intervals, [d - sqrt((p1-l1)^2 + (u2-p2)^2), d + sqrt((u1-p1)^2 +
    (p2-l2)^2)]. (nan, nan) when either sample is empty."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


@dataclass(frozen=True)
class Pairs:
    """The paired 2x2 table of one dose against the floor over the tickets decided under both:
    ``both`` failed under both, ``dose_only`` failed under the dose only, ``floor_only`` under
    the floor only, ``neither`` under neither."""

    both: int
    dose_only: int
    floor_only: int
    neither: int

    def __post_init__(self) -> None:
        if min(self.both, self.dose_only, self.floor_only, self.neither) < 0:
            raise ValueError(f"need non-negative cells; got {self}")

    @property
    def n(self) -> int:
        return self.both + self.dose_only + self.floor_only + self.neither

    @classmethod
    def of(cls, dose: dict[Any, bool | None], floor: dict[Any, bool | None]) -> Pairs:
        """The table from per-ticket outcomes (key: the ticket; True failed, False succeeded,
        None undecided) under the dose and under the floor; a ticket undecided or missing on
        either side is left out."""
        cells = Counter(
            (dose[k], floor[k])
            for k in dose.keys() & floor.keys()
            if dose[k] is not None and floor[k] is not None
        )
        return cls(cells[True, True], cells[True, False], cells[False, True], cells[False, False])


def paired_newcombe_interval(pairs: Pairs, z: float = 1.959963984540054) -> tuple[float, float]:
    """The hybrid score interval of p_dose - p_floor from paired outcomes (Newcombe 1998b,
    "Improved confidence intervals for the difference between binomial proportions based on
    paired data", Statistics in Medicine 17, method 10).

    With (l_i, u_i) the Wilson intervals of the two marginal rates and phi the correlation of
    the table, continuity-corrected as in that method (ad - bc replaced by max(ad - bc - n/2, 0)
    when positive; phi = 0 when a margin is empty): [d - sqrt(dl1^2 - 2 phi dl1 du2 + du2^2),
    d + sqrt(du1^2 - 2 phi du1 dl2 + dl2^2)] with dl1 = p1 - l1, du2 = u2 - p2, du1 = u1 - p1,
    dl2 = p2 - l2. (nan, nan) for an empty table.
    """
    n = pairs.n
    if n <= 0:
        return math.nan, math.nan
    k1, k2 = pairs.both + pairs.dose_only, pairs.both + pairs.floor_only
    p1, p2 = k1 / n, k2 / n
    l1, u1 = wilson_interval(k1, n, z)
    l2, u2 = wilson_interval(k2, n, z)
    margins = k1 * (n - k1) * k2 * (n - k2)
    cross = pairs.both * pairs.neither - pairs.dose_only * pairs.floor_only
    if margins == 0:
        phi = 0.0
    else:
        phi = (max(cross - n / 2, 0.0) if cross > 0 else cross) / math.sqrt(margins)
    d = p1 - p2
    dl1, du2, du1, dl2 = p1 - l1, u2 - p2, u1 - p1, p2 - l2
    lo = d - math.sqrt(max(dl1 * dl1 - 2 * phi * dl1 * du2 + du2 * du2, 0.0))
    hi = d + math.sqrt(max(du1 * du1 - 2 * phi * du1 * dl2 + dl2 * dl2, 0.0))
    return lo, hi


def dose_arm(kind: str, size: float) -> tuple[str, float] | None:
    """(arm, distance from no perturbation) of a dose; None for what is no dose (``none``,
    ``scale 1``, ``noise 0``, a re-draw)."""
    if kind == "scale" and size != 1:
        return ("scale down", 1 - size) if size < 1 else ("scale up", size)
    if kind == "noise" and size > 0:
        return "noise", size
    return None


@dataclass(frozen=True)
class Tally:
    """One dose (or the floor) over its tickets: ``failures`` of ``n`` decided, ``undecided``
    apart, and the failures by class (``kinds``)."""

    failures: int
    n: int
    undecided: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.failures <= self.n or self.undecided < 0:
            raise ValueError(f"need 0 <= failures <= n, undecided >= 0; got {self}")

    @classmethod
    def of(cls, outcomes: Iterable[str | None], failure_kinds: Iterable[str]) -> Tally:
        """Count ``outcomes`` (one class per ticket): those in ``failure_kinds`` are failures,
        None is undecided, anything else a success."""
        counts = Counter(outcomes)
        fail = set(failure_kinds)
        undecided = counts.pop(None, 0)
        kinds = {k: v for k, v in sorted(counts.items()) if k in fail}
        return cls(sum(kinds.values()), sum(counts.values()), undecided, kinds)


def rate_columns(t: Tally, target: float = TARGET_HALF_WIDTH) -> dict[str, Any]:
    """The columns of one tally: counts, rate, Wilson interval, its half-width and whether it
    meets ``target``."""
    lo, hi = wilson_interval(t.failures, t.n)
    half = (hi - lo) / 2 if t.n else math.nan
    return {
        "n": t.n,
        "failures": t.failures,
        "undecided": t.undecided,
        "failure_rate": t.failures / t.n if t.n else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "half_width": half,
        "resolved": bool(half <= target),
        "failure_kinds": dict(t.kinds),
    }


def _difference(t: Tally, floor: Tally, pairs: Pairs | None) -> dict[str, Any]:
    """The difference of a dose from the floor and its interval: paired over ``pairs`` when
    given, else from the two tallies as independent samples."""
    if pairs is not None:
        n = pairs.n
        lo, hi = paired_newcombe_interval(pairs)
        return {
            "diff": (pairs.dose_only - pairs.floor_only) / n if n else math.nan,
            "diff_low": lo,
            "diff_high": hi,
            "diff_method": "paired",
            "n_pairs": n,
            "broken_pairs": pairs.dose_only,
            "mended_pairs": pairs.floor_only,
        }
    lo, hi = newcombe_interval(t.failures, t.n, floor.failures, floor.n)
    return {
        "diff": t.failures / t.n - floor.failures / floor.n if t.n and floor.n else math.nan,
        "diff_low": lo,
        "diff_high": hi,
        "diff_method": "independent",
        "n_pairs": None,
        "broken_pairs": None,
        "mended_pairs": None,
    }


def dose_rows(
    doses: list[tuple[str, float, Tally]],
    floor: Tally,
    target: float = TARGET_HALF_WIDTH,
    pairs: list[Pairs] | None = None,
) -> list[dict[str, Any]]:
    """One row per dose (kind, size, tally), in the order given: the rate columns, its arm and
    distance, and the difference from ``floor`` with Newcombe's interval (paired over
    ``pairs``, one table per dose, when given; ``diff_method`` says which), its half-width and
    whether that meets ``target`` (``diff_resolved``). A paired row also counts its tickets
    (``n_pairs``), those failing under the dose only (``broken_pairs``) and those failing under
    the floor only (``mended_pairs``)."""
    if pairs is not None and len(pairs) != len(doses):
        raise ValueError(f"need one table of pairs per dose; got {len(pairs)} for {len(doses)}")
    rows = []
    for i, (kind, size, t) in enumerate(doses):
        arm = dose_arm(kind, size)
        difference = _difference(t, floor, None if pairs is None else pairs[i])
        half = (difference["diff_high"] - difference["diff_low"]) / 2
        rows.append(
            {
                "perturbation": kind,
                "size": size,
                "arm": arm[0] if arm else None,
                "distance": arm[1] if arm else None,
                **rate_columns(t, target),
                **difference,
                "diff_half_width": half,
                "diff_resolved": bool(half <= target),
                "above_floor": bool(difference["diff_low"] > 0),
            }
        )
    return rows


def thresholds(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """Per arm of :data:`ARMS` that has doses: the first row in order of distance whose
    difference from the floor lies above 0 (``above_floor``), or None when none does."""
    out: dict[str, dict[str, Any] | None] = {}
    for arm in ARMS:
        mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["distance"])
        if mine:
            out[arm] = next((r for r in mine if r["above_floor"]), None)
    return out


THRESHOLD_COLUMNS = ("failure_rate", "ci_low", "ci_high", "diff", "diff_low", "diff_high")


def threshold_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm of :func:`thresholds` over the dose ``rows``: ``arm``, ``threshold``
    (the dose's size), its ``label`` and :data:`THRESHOLD_COLUMNS`, all None where no dose of
    the arm lies above the floor."""
    return [
        {
            "arm": arm,
            "threshold": None if first is None else first["size"],
            "label": None if first is None else first.get("label"),
            **{k: None if first is None else first[k] for k in THRESHOLD_COLUMNS},
        }
        for arm, first in thresholds(rows).items()
    ]


__all__ = [
    "ARMS",
    "TARGET_HALF_WIDTH",
    "THRESHOLD_COLUMNS",
    "Pairs",
    "Tally",
    "dose_arm",
    "dose_rows",
    "newcombe_interval",
    "paired_newcombe_interval",
    "rate_columns",
    "threshold_rows",
    "thresholds",
]
