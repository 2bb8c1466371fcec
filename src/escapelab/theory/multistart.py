"""Closed forms for the literal lottery picture (MISSION.md, E2) and binomial intervals.

If training a width-m network were a multi-start search over K(m) independent sub-networks of the
teacher's width r*, each succeeding with the probability p measured at m = r*, then

    P(m) = 1 - (1 - p)^K(m),
    with K = C(m, r*) overlapping subsets or K = floor(m / r*) disjoint ones.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); (nan, nan) when n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def n_tickets(m: int, r: int, mode: Literal["subsets", "disjoint"]) -> int:
    """K(m): the number of width-r sub-networks of a width-m network (C(m, r) or floor(m / r))."""
    if m < r:
        return 0
    return math.comb(m, r) if mode == "subsets" else m // r


def multistart_prediction(p: float, m: int, r: int, mode: Literal["subsets", "disjoint"]) -> float:
    """P(m) = 1 - (1 - p)^K(m): success if any of K independent tickets succeeds."""
    k = n_tickets(m, r, mode)
    if p >= 1.0:
        return 1.0 if k > 0 else 0.0
    return 1.0 - math.exp(k * math.log1p(-p)) if k > 0 else 0.0


def bootstrap_mean_interval(
    values: Sequence[float], level: float = 0.95, resamples: int = 4000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (Efron 1979): the values are
    resampled with replacement ``resamples`` times (a seeded, reproducible draw) and the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means are returned.

    Used over teachers: each value is one teacher's rate, so the interval reflects how much the
    rate varies between teachers, not only the binomial noise within one. With few values it
    is narrow where they agree and cannot be wider than their range; (nan, nan) for none.
    """
    if not values:
        return float("nan"), float("nan")
    gen = random.Random(seed)
    n = len(values)
    means = sorted(sum(gen.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[math.floor((1 - level) / 2 * (resamples - 1))]
    hi = means[math.ceil((1 + level) / 2 * (resamples - 1))]
    return lo, hi
