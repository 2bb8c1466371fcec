"""Deterministic-equivalent test and train risk of random-feature (RF) ridge regression.

The "eigenframework" of Simon, Karkada, Ghosh & Belkin, "More is Better in Modern Machine
Learning: when Infinite Overparameterization is Optimal and Overfitting is Obligatory" (ICLR 2024,
arXiv 2311.14646, section 4; building on Bach 2023 and Atanasov, Zavatone-Veth & Pehlevan 2024):
the risk depends on the task only through the kernel's eigenvalues ``lam_i`` (of the kernel
K(x, x') = E_w[g(w.x) g(w.x')] under the data distribution), the target's squared eigen-
coefficients ``v2_i`` and the noise variance ``noise``.

Conventions used here (the derivation is in the docstring of :func:`rf_risk`). Features are
z_j(x) = g(w_j . x) / sqrt(k) for j = 1..k, so that z(x).z(x') -> K(x, x') as k -> inf; the model
minimises ``|Z a - y|^2 + delta |a|^2`` over n samples (``delta`` is the absolute ridge; the
experiments use delta = n * rho, the ridge per sample). Write
df1(g) = sum_i lam_i / (lam_i + g) and df2(g) = sum_i lam_i^2 / (lam_i + g)^2. Then

* gamma and kappa are the unique positive solutions of
  ``n = df1(gamma) + delta / kappa`` and ``kappa = gamma * (1 - df1(gamma) / k)``;
* with gamma' = 1 / (1 - df2(gamma) / k),
  ``B = sum_i v2_i [gamma (lam_i + gamma) - gamma' kappa lam_i] / (lam_i + gamma)^2`` (the error of
  the population-optimal predictor at effective ridge kappa, misspecification by the k features
  included) and ``D = df1(gamma) - kappa gamma' sum_i lam_i / (lam_i + gamma)^2``;
* test risk (mean squared error on fresh samples, noise included)
  ``E_te = (B + noise) / (1 - D / n)`` and train risk ``E_tr = (delta / (n kappa))^2 E_te``.

As k -> inf, gamma = kappa and gamma' = 1: the kernel ridge regression eigenframework
(eigenlearning, Simon et al. 2021; Jacot et al. 2020; Canatar et al. 2021).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

_BISECTIONS = 60
_TINY = 1e-300
_CHUNK = 256  # points solved together: (chunk, modes) arrays stay in cache


@dataclass(frozen=True)
class RFRisk:
    """The eigenframework's numbers for a batch of points (all arrays broadcast together)."""

    test: NDArray[np.float64]
    train: NDArray[np.float64]
    kappa: NDArray[np.float64]
    gamma: NDArray[np.float64]


def _df(lam: NDArray[np.float64], gamma: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray]:
    """df1, df2 and sum lam/(lam+g)^2 at every gamma (shape (P,)), over modes lam (M,)."""
    ratio = lam[None, :] / (lam[None, :] + gamma[:, None])
    return ratio.sum(1), (ratio**2).sum(1), (ratio**2 / lam[None, :]).sum(1)


def solve_gamma(
    lam: NDArray[np.float64],
    n: NDArray[np.float64],
    k: NDArray[np.float64],
    delta: NDArray[np.float64],
) -> NDArray[np.float64]:
    """gamma solving ``n = df1(gamma) + delta / (gamma (1 - df1(gamma)/k))`` at every point.

    The right side minus n decreases strictly in gamma on the set where df1(gamma) < k (df1
    falls and kappa = gamma (1 - df1/k) rises, its derivative being 1 - df2/k > 0), from +inf
    (kappa -> 0) to -n, so bisection in log gamma finds the one root; points where df1 >= k
    count as "too small". The root lies above delta / n (there kappa <= gamma = delta / n makes
    delta / kappa >= n), which brackets it within a few dozen e-folds.
    """
    hi = np.log(1e3 * (lam.sum() + lam.max() + delta / n + 1.0))
    lo = np.log(delta / n) - 1e-9
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        gamma = np.exp(mid)
        df1 = (lam[None, :] / (lam[None, :] + gamma[:, None])).sum(1)
        spare = 1.0 - df1 / k
        with np.errstate(divide="ignore"):
            excess = np.where(spare > 0, df1 + delta / np.maximum(gamma * spare, _TINY) - n, np.inf)
        too_small = excess > 0
        lo = np.where(too_small, mid, lo)
        hi = np.where(too_small, hi, mid)
    return np.exp(0.5 * (lo + hi))


def rf_risk(
    lam: ArrayLike,
    v2: ArrayLike,
    noise: float,
    n: ArrayLike,
    k: ArrayLike,
    delta: ArrayLike,
) -> RFRisk:
    """Test and train risk of RF ridge regression with ``k`` features (``np.inf``: kernel ridge
    regression), ``n`` samples and absolute ridge ``delta > 0``, for the task (``lam``, ``v2``,
    ``noise``); ``n``, ``k``, ``delta`` broadcast against each other.

    Derivation (two deterministic equivalents, as in Bach 2023). Given the features, ridge
    regression on them is linear ridge regression with feature covariance F^T F, where F = (the
    k features in the kernel's eigenbasis) / sqrt(k); its risk is (|v - F a_kappa|^2 + noise) /
    (1 - df2_F(kappa)/n), a_kappa the population ridge solution at effective ridge kappa, with
    n = df1_F(kappa) + delta/kappa. Averaging over the features uses the sample-covariance
    equivalent kappa (F F^T + kappa)^-1 ~ gamma (Lambda + gamma)^-1 with kappa = gamma (1 -
    df1(gamma)/k); its derivative in kappa gives the second-order terms (gamma' = d gamma / d
    kappa = 1 / (1 - df2(gamma)/k)).
    """
    lam = np.asarray(lam, dtype=np.float64)
    v2 = np.asarray(v2, dtype=np.float64)
    if lam.ndim != 1 or v2.shape != lam.shape:
        raise ValueError(f"lam and v2 must be 1-D of equal length, got {lam.shape}, {v2.shape}")
    if (lam <= 0).any() or (v2 < 0).any() or noise < 0:
        raise ValueError("eigenvalues must be > 0, squared coefficients and noise >= 0")
    n_b, k_b, d_b = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (n, k, delta)))
    shape = n_b.shape
    n_f, k_f, d_f = (a.reshape(-1) for a in (n_b, k_b, d_b))
    if (n_f <= 0).any() or (k_f <= 0).any() or (d_f <= 0).any():
        raise ValueError("n, k and delta must be > 0 (k may be inf)")
    gamma = np.concatenate(
        [
            solve_gamma(lam, n_f[i : i + _CHUNK], k_f[i : i + _CHUNK], d_f[i : i + _CHUNK])
            for i in range(0, len(n_f), _CHUNK)
        ]
    )
    df1, df2, s1 = _df(lam, gamma)
    kappa = gamma * (1.0 - df1 / k_f)
    dgamma = 1.0 / (1.0 - df2 / k_f)
    denom = (lam[None, :] + gamma[:, None]) ** 2
    bias_terms = gamma[:, None] * (lam[None, :] + gamma[:, None]) - (dgamma * kappa)[:, None] * lam
    bias = (v2[None, :] * bias_terms / denom).sum(1)
    dof = df1 - kappa * dgamma * s1
    test = (bias + noise) / (1.0 - dof / n_f)
    train = (d_f / (n_f * kappa)) ** 2 * test
    return RFRisk(
        test.reshape(shape), train.reshape(shape), kappa.reshape(shape), gamma.reshape(shape)
    )


def krr_risk(lam: ArrayLike, v2: ArrayLike, noise: float, n: ArrayLike, delta: ArrayLike) -> RFRisk:
    """The infinite-feature limit of :func:`rf_risk`: kernel ridge regression."""
    return rf_risk(lam, v2, noise, n, np.inf, delta)


__all__ = ["RFRisk", "krr_risk", "rf_risk", "solve_gamma"]
