"""Closed forms of the multi-start picture and the Wilson interval."""

from __future__ import annotations

import math

import pytest

from escapelab.theory.multistart import multistart_prediction, n_tickets, wilson_interval


def test_ticket_counts() -> None:
    assert n_tickets(8, 4, "subsets") == 70
    assert n_tickets(8, 4, "disjoint") == 2
    assert n_tickets(9, 4, "disjoint") == 2
    assert n_tickets(3, 4, "subsets") == 0


def test_prediction_formula() -> None:
    assert multistart_prediction(0.3, 4, 4, "subsets") == pytest.approx(0.3)
    assert multistart_prediction(0.3, 5, 4, "subsets") == pytest.approx(1 - 0.7**5)
    assert multistart_prediction(0.3, 8, 4, "disjoint") == pytest.approx(1 - 0.7**2)
    assert multistart_prediction(0.0, 12, 4, "subsets") == 0.0
    assert multistart_prediction(1.0, 4, 4, "subsets") == 1.0


def test_wilson_interval_known_values() -> None:
    # the Wilson bounds are the two roots pi of (p - pi)^2 = z^2 pi (1 - pi) / n
    z, k, n = 1.959963984540054, 9, 24
    lo, hi = wilson_interval(k, n)
    for pi in (lo, hi):
        assert (k / n - pi) ** 2 == pytest.approx(z * z * pi * (1 - pi) / n, rel=1e-12)
    assert lo < k / n < hi
    # a published value: 0 successes of 10 gives the upper bound z^2 / (n + z^2) = 0.2775
    assert wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    assert 0.0 < wilson_interval(10, 10)[0] < 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
