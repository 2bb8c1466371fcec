"""The laws of P(fail) against width: likelihoods against closed forms, and each law recovered
from counts it generated exactly."""

from __future__ import annotations

import math

import pytest

from escapelab.theory.scaling_laws import (
    WidthCounts,
    binomial_log_likelihood,
    deviance_residual,
    fit_laws,
)


def _by_law(fits):
    return {f.law: f for f in fits}


def test_binomial_log_likelihood_is_the_closed_form() -> None:
    got = binomial_log_likelihood(3, 10, math.log(0.2))
    assert got == pytest.approx(3 * math.log(0.2) + 7 * math.log(0.8), rel=1e-14)
    # a rate of e^-1000 underflows as a float but not as a logarithm
    assert binomial_log_likelihood(0, 100, -1000.0) == pytest.approx(-100 * math.exp(-1000.0))
    assert binomial_log_likelihood(1, 100, -1000.0) == pytest.approx(-1000.0)
    # log(1 - p) near p = 1: p = 1 - 1e-12
    assert binomial_log_likelihood(0, 1, math.log1p(-1e-12)) == pytest.approx(
        math.log(1e-12), rel=1e-6
    )
    assert binomial_log_likelihood(2, 5, -math.inf) == -math.inf


def test_deviance_residual_sign_and_size() -> None:
    assert deviance_residual(10, 100, math.log(0.1)) == pytest.approx(0.0, abs=1e-12)
    assert deviance_residual(20, 100, math.log(0.1)) > 2
    assert deviance_residual(2, 100, math.log(0.1)) < -2


def test_counts_from_the_overlapping_lottery_law_pick_it() -> None:
    """q0 = 1/2 at r* = 2: P(3) = (1/2)^3, P(4) = (1/2)^6, exactly in the counts."""
    ref = WidthCounts(2, 6400, 3200)
    wider = [WidthCounts(3, 6400, 800), WidthCounts(4, 6400, 100)]
    fits = _by_law(fit_laws(ref, wider, 2))
    lottery = fits["lottery_subsets"]
    assert lottery.k == 0 and lottery.deviance == pytest.approx(0.0, abs=1e-9)
    assert lottery.predicted == pytest.approx({3: 0.125, 4: 1 / 64})
    assert min(f.aic for f in fits.values()) == lottery.aic
    # the disjoint law predicts q0^1 = 1/2 at m = 3 and q0^2 = 1/4 at m = 4: rejected
    assert fits["lottery_disjoint"].aic - lottery.aic > 1000
    # the fitted base lands on the measured one
    assert fits["lottery_fitted"].parameter == pytest.approx(0.5, abs=1e-6)
    assert fits["free"].k == 2 and fits["free"].deviance == pytest.approx(0.0, abs=1e-12)


def test_counts_from_the_escape_law_recover_its_rate() -> None:
    """P(m) = 0.4 exp(-0.5 (m - 4)) at m = 5..12, with n large enough to pin beta."""
    beta, n = 0.5, 200_000
    ref = WidthCounts(4, n, round(0.4 * n))
    wider = [WidthCounts(m, n, round(0.4 * math.exp(-beta * (m - 4)) * n)) for m in range(5, 13)]
    fits = _by_law(fit_laws(ref, wider, 4))
    escape = fits["escape"]
    assert escape.parameter == pytest.approx(beta, abs=2e-3)
    assert escape.parameter_low < beta < escape.parameter_high
    assert escape.parameter_high - escape.parameter_low < 0.01
    assert escape.deviance < 20  # 8 widths: a good fit
    assert min(f.aic for f in fits.values()) == escape.aic
    # the combinatorial law predicts 0.4^5 = 0.01 at m = 5 and 0.4^495 at m = 12
    assert fits["lottery_subsets"].aic - escape.aic > 1e5
    assert fits["lottery_subsets"].predicted[5] == pytest.approx(0.4**5)


def test_the_lottery_bands_carry_q0s_wilson_interval() -> None:
    fits = _by_law(fit_laws(WidthCounts(3, 50, 20), [WidthCounts(4, 50, 5)], 3))
    lottery = fits["lottery_subsets"]
    # C(4, 3) = 4: the prediction is q0^4 and its band the Wilson ends to the 4th power
    assert lottery.predicted[4] == pytest.approx(0.4**4)
    assert lottery.predicted_low[4] < 0.4**4 < lottery.predicted_high[4]
    z, q, n = 1.959963984540054, 0.4, 50
    centre, half = q + z * z / (2 * n), z * math.sqrt(q * (1 - q) / n + z * z / (4 * n * n))
    upper = (centre + half) / (1 + z * z / n)  # Wilson (1927), by hand
    assert lottery.predicted_high[4] == pytest.approx(upper**4, rel=1e-9)


@pytest.mark.parametrize(
    ("ref", "wider", "match"),
    [
        (WidthCounts(3, 10, 0), [WidthCounts(4, 10, 1)], "0 < q0 < 1"),
        (WidthCounts(3, 10, 10), [WidthCounts(4, 10, 1)], "0 < q0 < 1"),
        (WidthCounts(4, 10, 5), [WidthCounts(4, 10, 1)], "reference width"),
        (WidthCounts(3, 10, 5), [WidthCounts(3, 10, 1)], "exceed"),
    ],
)
def test_undefined_fits_are_refused(ref, wider, match) -> None:
    with pytest.raises(ValueError, match=match):
        fit_laws(ref, wider, 3)


def test_counts_are_checked() -> None:
    with pytest.raises(ValueError, match="failures"):
        WidthCounts(3, 10, 11)
