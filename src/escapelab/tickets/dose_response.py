"""Dose–response of winning tickets: failure rate against the size of a perturbation, against
the noise floor, with the threshold dose where failure departs from it.

A *dose* is one perturbation of :mod:`escapelab.tickets.perturb` (scale by alpha, noise of size
sigma). Each dose is tallied as ``failures`` of ``n`` decided tickets (plus those left undecided,
e.g. out of budget, counted apart) and compared with the *floor*: the failure rate of the same
tickets under no change of their initialization at all. Per dose:

* the failure rate with its Wilson 95 % interval (Wilson 1927) and the interval's half-width,
  against a target half-width (``resolved``);
* the difference from the floor with Newcombe's hybrid score interval (Newcombe 1998, method
  10: the two Wilson intervals combined) and its half-width against the same target (about
  sqrt(2) times the rates' when dose and floor have the same n). The interval treats the two
  rates as independent samples. Where the same tickets make both (the neuron level), a paired
  interval would be narrower in so far as a ticket's outcomes under the dose and under the
  floor are positively correlated;
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


def dose_rows(
    doses: list[tuple[str, float, Tally]], floor: Tally, target: float = TARGET_HALF_WIDTH
) -> list[dict[str, Any]]:
    """One row per dose (kind, size, tally), in the order given: the rate columns, its arm and
    distance, and the difference from ``floor`` with Newcombe's interval, its half-width and
    whether that meets ``target`` (``diff_resolved``)."""
    rows = []
    for kind, size, t in doses:
        arm = dose_arm(kind, size)
        lo, hi = newcombe_interval(t.failures, t.n, floor.failures, floor.n)
        diff = t.failures / t.n - floor.failures / floor.n if t.n and floor.n else math.nan
        rows.append(
            {
                "perturbation": kind,
                "size": size,
                "arm": arm[0] if arm else None,
                "distance": arm[1] if arm else None,
                **rate_columns(t, target),
                "diff": diff,
                "diff_low": lo,
                "diff_high": hi,
                "diff_half_width": (hi - lo) / 2,
                "diff_resolved": bool((hi - lo) / 2 <= target),
                "above_floor": bool(lo > 0),
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
    "Tally",
    "dose_arm",
    "dose_rows",
    "newcombe_interval",
    "rate_columns",
    "threshold_rows",
    "thresholds",
]
