"""Laws for P(failure) against student width, compared by binomial likelihood and AIC.

The data are, per width m >= r*, the number n of certified endpoints and the number f of them
that are not global minima. The failure rate q0 = f/n measured at m = r* is the one input every
law shares (the literal lottery picture's p = 1 - q0, the success rate of one width-r*
sub-network); the laws are then scored on the wider students only, so a law with no free
parameter is a genuine prediction:

* ``lottery_subsets``: the multi-start reading of the lottery picture with overlapping
  sub-networks, P(m) = q0^C(m, r*) (zero free parameters);
* ``lottery_disjoint``: the same with the ⌊m / r*⌋ disjoint sub-networks, P(m) = q0^⌊m/r*⌋
  (zero free parameters);
* ``lottery_fitted``: P(m) = q^C(m, r*) with q fitted to the wider students (one parameter):
  how far the combinatorial law's base must move from the measured q0 to fit at all;
* ``escape``: log P(m) = log q0 - beta (m - r*), each extra unit dividing the failure rate by
  the same factor exp(beta) (one parameter). Extra units and extra parameters differ by the
  fixed factor of parameters per unit, so "linear in extra parameters" is the same law with
  beta rescaled, and has the same likelihood;
* ``free``: every width its own rate f/n (one parameter per width): the saturated model, the
  best any law can do. A law's deviance 2 (logL_free - logL_law) measures its misfit.

AIC = 2k - 2 log L (Akaike 1974); differences of more than about 10 are decisive in the usual
reading (Burnham & Anderson, "Model Selection and Multimodel Inference", 2002, sec. 2.6).
Intervals: the zero-parameter predictions carry q0's Wilson interval through the (monotone)
law; the one-parameter fits carry a profile-likelihood interval (log L within
chi2_1(0.95) / 2 = 1.92 of its maximum). All of it is computed in log space, so
predictions of 1e-300 and below neither underflow nor poison the likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from escapelab.theory.multistart import wilson_interval

LAWS = ("lottery_subsets", "lottery_disjoint", "lottery_fitted", "escape", "free")

# half of the 95 % quantile of chi-square with one degree of freedom: the profile-likelihood cut
_PROFILE_DROP = 1.920729410347062


@dataclass(frozen=True)
class WidthCounts:
    """Certified endpoints ``n`` at student width ``m``, of which ``failures`` are not global."""

    m: int
    n: int
    failures: int

    def __post_init__(self) -> None:
        if not 0 <= self.failures <= self.n:
            raise ValueError(f"failures must be in 0..n = {self.n}, got {self.failures}")


@dataclass(frozen=True)
class LawFit:
    """One law scored on the widths above r*: its free parameters ``k``, log-likelihood, AIC,
    deviance from the saturated fit, fitted parameter (None without one) with its 95 %
    profile interval, and per width the predicted P(fail) with an interval and the signed
    deviance residual."""

    law: str
    k: int
    log_likelihood: float
    aic: float
    deviance: float
    parameter: float | None
    parameter_low: float | None
    parameter_high: float | None
    predicted: dict[int, float] = field(default_factory=dict)
    predicted_low: dict[int, float] = field(default_factory=dict)
    predicted_high: dict[int, float] = field(default_factory=dict)
    residuals: dict[int, float] = field(default_factory=dict)


def _log1mexp(log_p: float) -> float:
    """log(1 - exp(log_p)) for log_p <= 0, accurate at both ends (Mächler 2012)."""
    if log_p == 0.0:
        return -math.inf
    if log_p > -math.log(2):
        return math.log(-math.expm1(log_p))
    return math.log1p(-math.exp(log_p))


def binomial_log_likelihood(failures: int, n: int, log_p: float) -> float:
    """log of P(failures | n, p) without the binomial coefficient (it cancels between laws),
    with p given by its logarithm; -inf where the law rules the data out."""
    if log_p > 0:
        raise ValueError(f"log_p must be <= 0, got {log_p}")
    total = 0.0
    if failures:
        total += failures * log_p if log_p > -math.inf else -math.inf
    if n - failures:
        total += (n - failures) * _log1mexp(log_p)
    return total


def deviance_residual(failures: int, n: int, log_p: float) -> float:
    """The signed deviance residual of one width: sign(f - n p) sqrt(2 (logL_sat - logL))."""
    best = binomial_log_likelihood(failures, n, math.log(failures / n) if failures else -math.inf)
    here = binomial_log_likelihood(failures, n, log_p)
    gap = max(0.0, 2 * (best - here))
    expected = n * math.exp(log_p)
    return (
        math.copysign(math.sqrt(gap), failures - expected)
        if math.isfinite(gap)
        else (math.copysign(math.inf, failures - expected))
    )


def _log_subsets(m: int, r_star: int) -> float:
    return float(math.comb(m, r_star))


def _log_disjoint(m: int, r_star: int) -> float:
    return float(m // r_star)


def _law_log_p(exponent: Callable[[int, int], float], log_q: float, m: int, r_star: int) -> float:
    """log P(m) = exponent(m, r*) * log q for the lottery laws."""
    return exponent(m, r_star) * log_q if log_q > -math.inf else -math.inf


def _sum_ll(wider: Sequence[WidthCounts], log_p: Callable[[int], float]) -> float:
    return sum(binomial_log_likelihood(w.failures, w.n, log_p(w.m)) for w in wider)


def _profile(
    ll: Callable[[float], float], lo: float, hi: float
) -> tuple[float, float, float, float]:
    """Maximise a one-parameter log-likelihood on [lo, hi]; return the argmax, the maximum and
    the 95 % profile interval (clipped to [lo, hi])."""
    # scipy is imported where it is used: at module level it adds about 60 MiB and a second or
    # two to every process that imports escapelab
    from scipy.optimize import brentq, minimize_scalar

    res = minimize_scalar(
        lambda x: -ll(x), bounds=(lo, hi), method="bounded", options={"xatol": 1e-10}
    )
    best, top = float(res.x), -float(res.fun)
    cut = top - _PROFILE_DROP

    def side(edge: float) -> float:
        if ll(edge) >= cut:
            return edge
        return float(brentq(lambda x: ll(x) - cut, min(edge, best), max(edge, best)))

    return best, top, side(lo), side(hi)


def _wilson_log_bounds(f: int, n: int) -> tuple[float, float]:
    lo, hi = wilson_interval(f, n)
    return (math.log(lo) if lo > 0 else -math.inf), math.log(hi)


def fit_laws(reference: WidthCounts, wider: Sequence[WidthCounts], r_star: int) -> list[LawFit]:
    """Every law of :data:`LAWS` scored on ``wider`` (widths > r*), with q0 from ``reference``
    (the counts at m = r*). Raises ValueError when the reference has no failure or no success
    (then q0 is 0 or 1 and no law is defined) or a width is not above r*."""
    if reference.m != r_star:
        raise ValueError(f"the reference width must be r* = {r_star}, got {reference.m}")
    if reference.failures in (0, reference.n):
        raise ValueError(
            f"P(fail) at m = r* is {reference.failures}/{reference.n}: the laws need 0 < q0 < 1"
        )
    if any(w.m <= r_star for w in wider):
        raise ValueError(f"the scored widths must exceed r* = {r_star}")
    log_q0 = math.log(reference.failures / reference.n)
    log_q0_lo, log_q0_hi = _wilson_log_bounds(reference.failures, reference.n)
    saturated = _sum_ll(
        wider,
        lambda m: next(
            math.log(w.failures / w.n) if w.failures else -math.inf for w in wider if w.m == m
        ),
    )
    fits: list[LawFit] = []

    def finish(
        name: str,
        k: int,
        log_p: Callable[[int], float],
        parameter=None,
        p_lo=None,
        p_hi=None,
        bounds: Callable[[int], tuple[float, float]] | None = None,
    ) -> None:
        ll = _sum_ll(wider, log_p)
        widths = [w.m for w in wider]
        low = {m: math.exp(bounds(m)[0]) for m in widths} if bounds else {}
        high = {m: math.exp(bounds(m)[1]) for m in widths} if bounds else {}
        fits.append(
            LawFit(
                name,
                k,
                ll,
                2 * k - 2 * ll,
                2 * (saturated - ll),
                parameter,
                p_lo,
                p_hi,
                {m: math.exp(log_p(m)) for m in widths},
                low,
                high,
                {w.m: deviance_residual(w.failures, w.n, log_p(w.m)) for w in wider},
            )
        )

    for name, exponent in (("lottery_subsets", _log_subsets), ("lottery_disjoint", _log_disjoint)):
        finish(
            name,
            0,
            lambda m, e=exponent: _law_log_p(e, log_q0, m, r_star),
            bounds=lambda m, e=exponent: (
                _law_log_p(e, log_q0_lo, m, r_star),
                _law_log_p(e, log_q0_hi, m, r_star),
            ),
        )

    # lottery with its base fitted: parameter q in (0, 1), searched as log q
    def ll_fitted(log_q: float) -> float:
        return _sum_ll(wider, lambda m: _law_log_p(_log_subsets, log_q, m, r_star))

    best, _, lo, hi = _profile(ll_fitted, -50.0, -1e-12)
    finish(
        "lottery_fitted",
        1,
        lambda m: _law_log_p(_log_subsets, best, m, r_star),
        math.exp(best),
        math.exp(lo),
        math.exp(hi),
        bounds=lambda m: (
            _law_log_p(_log_subsets, lo, m, r_star),
            _law_log_p(_log_subsets, hi, m, r_star),
        ),
    )

    # escape: log P = log q0 - beta (m - r*); beta >= 0 bounded so that P stays below 1
    def ll_escape(beta: float) -> float:
        return _sum_ll(wider, lambda m: min(0.0, log_q0 - beta * (m - r_star)))

    top_beta = 50.0
    best, _, lo, hi = _profile(ll_escape, -abs(log_q0) / max(w.m - r_star for w in wider), top_beta)
    finish(
        "escape",
        1,
        lambda m: min(0.0, log_q0 - best * (m - r_star)),
        best,
        lo,
        hi,
        bounds=lambda m: (
            min(0.0, log_q0 - hi * (m - r_star)),
            min(0.0, log_q0 - lo * (m - r_star)),
        ),
    )

    finish(
        "free",
        len(wider),
        lambda m: next(
            math.log(w.failures / w.n) if w.failures else -math.inf for w in wider if w.m == m
        ),
        bounds=lambda m: next(_wilson_log_bounds(w.failures, w.n) for w in wider if w.m == m),
    )
    return fits


def upper_bound(failures: int, n: int) -> float:
    """The upper end of the Wilson 95 % interval of a failure rate (1 for n = 0)."""
    return wilson_interval(failures, n)[1] if n else 1.0
