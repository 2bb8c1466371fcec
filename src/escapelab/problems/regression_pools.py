"""Regression tasks as finite populations ("pools"), with their kernel eigenstructure.

Random-feature theory (:mod:`escapelab.theory.rf_eigenframework`) needs the kernel's eigenvalues
under the data distribution and the target's coefficients in its eigenbasis. Following Simon et
al. (arXiv 2311.14646, their real-data experiments) the distribution is a finite pool of N
points: training samples are drawn from it, the test risk is the mean over the whole pool, and
the eigenstructure of the uniform distribution on the pool is exact: with the Gram matrix
K_ab = K(x_a, x_b), lam_i are the eigenvalues of K / N and, for unit eigenvectors u_i,
phi_i(x_a) = sqrt(N) u_ia and v_i = u_i^T y / sqrt(N).

Pools:

``power-law``  x ~ N(0, diag(lam)) in d dimensions with lam_i proportional to i^-alpha (sum 1)
               and target y = sum_i v_i x_i / sqrt(lam_i) + noise with v_i^2 proportional to
               i^-beta (sum 1): with linear features the kernel is x.x', whose eigenvalues are
               lam and the target's squared coefficients v^2 (up to the pool's sampling), the
               power-law task of the paper (section 5).
``mnist1d``, ``digits``  every sample of the data set (train and test splits together),
               standardized per input feature and scaled by 1/sqrt(d) (so |x|^2 ~ 1), with the
               one-hot label minus 1/10 as a 10-dimensional target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from escapelab.data.datasets import load_dataset
from escapelab.nets.random_features import feature_kernel

POOLS: tuple[str, ...] = ("power-law", "mnist1d", "digits")
_RELATIVE_CUTOFF = 1e-12  # eigenvalues below this times the largest count as zero


@dataclass(frozen=True)
class Pool:
    """N inputs ``x`` (N, d) and targets ``y`` (N, C), float64."""

    name: str
    x: Tensor
    y: Tensor

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Eigenstructure:
    """The kernel's nonzero eigenvalues ``lam`` (descending), the target's squared coefficients
    ``v2`` (summed over outputs) and ``noise``: the target power outside those modes."""

    lam: np.ndarray
    v2: np.ndarray
    noise: float

    def exponent(self, lo: float = 0.01, hi: float = 0.3) -> float:
        """The power-law exponent alpha of lam_i ~ i^-alpha, a least-squares fit of log lam
        against log i over the modes from ``lo`` to ``hi`` of the spectrum (skipping the head
        and the pool-limited tail)."""
        i = np.arange(1, len(self.lam) + 1)
        keep = slice(max(int(lo * len(i)), 1), max(int(hi * len(i)), 3))
        slope = np.polyfit(np.log(i[keep]), np.log(self.lam[keep]), 1)[0]
        return float(-slope)


def power_law_pool(size: int, d: int, alpha: float, beta: float, noise: float, seed: int) -> Pool:
    """The synthetic power-law task (see the module docstring) with ``size`` samples."""
    gen = torch.Generator().manual_seed(seed)
    i = torch.arange(1, d + 1, dtype=torch.float64)
    lam = i ** (-alpha)
    lam /= lam.sum()
    v2 = i ** (-beta)
    v2 /= v2.sum()
    g = torch.randn(size, d, generator=gen, dtype=torch.float64)
    x = g * lam.sqrt()
    y = g @ v2.sqrt() + math.sqrt(noise) * torch.randn(size, generator=gen, dtype=torch.float64)
    return Pool("power-law", x, y[:, None])


def dataset_pool(name: str, size: int | None, seed: int) -> Pool:
    """MNIST-1D or digits as a regression pool of at most ``size`` samples (a seeded subset)."""
    data = load_dataset(name, seed=seed, val_fraction=0.0)
    x = torch.cat([data.x_train, data.x_test]).double()
    labels = torch.cat([data.y_train, data.y_test])
    if size is not None and size < len(labels):
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:size]
        x, labels = x[keep], labels[keep]
    std = x.std(0, correction=0)
    x = (x - x.mean(0)) / torch.where(std > 0, std, torch.ones_like(std)) / math.sqrt(x.shape[1])
    y = torch.nn.functional.one_hot(labels, data.n_classes).double() - 1.0 / data.n_classes
    return Pool(name, x, y)


def eigenstructure(pool: Pool, feature_map: str, gram: Tensor | None = None) -> Eigenstructure:
    """The eigenstructure of ``feature_map``'s kernel on the uniform distribution over
    ``pool`` (``gram``: its Gram matrix, if already computed)."""
    k = feature_kernel(pool.x, pool.x, feature_map) if gram is None else gram
    evals, evecs = torch.linalg.eigh(k / pool.size)
    keep = evals > _RELATIVE_CUTOFF * evals.max()
    lam = evals[keep].flip(0)
    coef = evecs[:, keep].flip(1).T @ pool.y / math.sqrt(pool.size)
    v2 = coef.square().sum(1)
    total = pool.y.square().sum(1).mean()
    return Eigenstructure(lam.numpy(), v2.numpy(), float(max(total - v2.sum(), 0.0)))


__all__ = ["POOLS", "Eigenstructure", "Pool", "dataset_pool", "eigenstructure", "power_law_pool"]
