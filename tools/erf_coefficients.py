"""Chebyshev coefficients of the fused kernel's erf (``src/escapelab/problems/shallow_fused.c``).

For x < 1 the kernel sums erf's Taylor series, erf(x) = 2 / sqrt(pi) sum_n (-1)^n x^(2n+1) /
(n! (2n + 1)) (19 terms in float64: the 19th is below 4e-18; 11 in float32). For x >= 1 it
computes erf(x) = 1 - exp(-x^2) g(t) / x with t = 1 / x and
g(t) = x exp(x^2) erfc(x), a smooth function on t in [1 / x_max, 1] (it tends to 1 / sqrt(pi)
as t -> 0). g is expanded in Chebyshev polynomials of u = (2 t - (lo + hi)) / (hi - lo) by
interpolation at the Chebyshev points (Trefethen, "Approximation Theory and Approximation
Practice", 2013, ch. 3), in 50-digit arithmetic (mpmath), and truncated where the coefficients
fall below the precision's tolerance. Run ``python tools/erf_coefficients.py`` to print the C
arrays and the largest error of the truncated series at 2,000 points.
"""

from __future__ import annotations

import mpmath

mpmath.mp.dps = 50
NODES = 96


def g(t: mpmath.mpf) -> mpmath.mpf:
    x = 1 / t
    return x * mpmath.exp(x * x) * mpmath.erfc(x)


def chebyshev(lo: float, hi: float, tol: float) -> list[mpmath.mpf]:
    lo_, hi_ = mpmath.mpf(lo), mpmath.mpf(hi)
    theta = [mpmath.pi * (j + mpmath.mpf(0.5)) / NODES for j in range(NODES)]
    values = [g((hi_ + lo_) / 2 + (hi_ - lo_) / 2 * mpmath.cos(th)) for th in theta]
    coeffs = [
        2
        / mpmath.mpf(NODES)
        * sum(v * mpmath.cos(k * th) for v, th in zip(values, theta, strict=True))
        for k in range(NODES)
    ]
    coeffs[0] /= 2
    last = max(k for k, c in enumerate(coeffs) if abs(c) > tol)
    return coeffs[: last + 1]


def clenshaw(coeffs: list[mpmath.mpf], u: mpmath.mpf) -> mpmath.mpf:
    b1 = b2 = mpmath.mpf(0)
    for c in reversed(coeffs[1:]):
        b1, b2 = 2 * u * b1 - b2 + c, b1
    return u * b1 - b2 + coeffs[0]


def report(name: str, lo: float, hi: float, tol: float) -> None:
    coeffs = chebyshev(lo, hi, tol)
    worst = mpmath.mpf(0)
    for i in range(2001):
        t = mpmath.mpf(lo) + (mpmath.mpf(hi) - lo) * i / 2000
        u = (2 * t - (lo + hi)) / (mpmath.mpf(hi) - lo)
        worst = max(worst, abs(clenshaw(coeffs, u) / g(t) - 1))
    print(
        f"/* {name}: {len(coeffs)} terms on t in [{lo:.6g}, {hi:.6g}], "
        f"relative error {mpmath.nstr(worst, 3)} */"
    )
    body = ",\n    ".join(mpmath.nstr(c, 20, min_fixed=0, max_fixed=0) for c in coeffs)
    print(f"static const double {name}[{len(coeffs)}] = {{\n    {body}}};")


def taylor(terms: int) -> None:
    coeffs = [
        2 / mpmath.sqrt(mpmath.pi) * (-1) ** n / (mpmath.factorial(n) * (2 * n + 1))
        for n in range(terms)
    ]
    body = ",\n    ".join(mpmath.nstr(c, 20, min_fixed=0, max_fixed=0) for c in coeffs)
    print(f"static const double ERF_TAYLOR[{terms}] = {{\n    {body}}};")


if __name__ == "__main__":
    taylor(19)
    report("ERFC_CHEB64", 1 / 6, 1.0, 1e-18)
    report("ERFC_CHEB32", 1 / 4, 1.0, 1e-9)
