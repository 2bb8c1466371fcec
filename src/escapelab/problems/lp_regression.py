"""Linear regression with the l_p loss, the convex problem of Arora, Cohen & Hazan (2018).

L(w) = (1/m) sum_i |x_i . w - y_i|^p / p over m samples (rows of X) for p >= 2: p = 2 is least
squares, p = 4 the loss where the paper finds that depth accelerates gradient descent. Inputs
and targets are standardised (zero mean, unit variance per column), so one grid of learning
rates suits both data sets. Problems are stacked on a leading axis (S, m, d), one per seed.

Data sets: ``synthetic`` (x ~ N(0, C) with the eigenvalues of C log-spaced from 1 to
1/``condition`` in a random basis, y = x . w_true + noise, one draw per seed) and
scikit-learn's bundled ``diabetes`` (442 samples, 10 features; no download), the same for every
seed. The optimum L* is found by Newton's method on the convex loss (exact for p = 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from escapelab.seeding import derive_seed


@dataclass(frozen=True)
class LpProblem:
    """Stacked problems: inputs ``x`` (S, m, d), targets ``y`` (S, m), the exponent ``p``, and
    each problem's optimum ``w_opt`` (S, d) and optimal loss ``loss_opt`` (S,)."""

    x: Tensor
    y: Tensor
    p: float
    w_opt: Tensor
    loss_opt: Tensor


def _standardise(a: Tensor) -> Tensor:
    return (a - a.mean(-2, keepdim=True)) / a.std(-2, keepdim=True).clamp_min(1e-12)


def regression_data(
    dataset: str, seeds: list[int], samples: int, dim: int, noise: float, condition: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Standardised (x, y) of shapes (S, m, d), (S, m) in float64, one problem per seed
    (``samples``, ``dim``, ``noise`` and ``condition`` shape the synthetic data only)."""
    if dataset == "diabetes":
        from sklearn.datasets import load_diabetes

        bunch = load_diabetes()
        x = torch.as_tensor(bunch.data, dtype=torch.float64)
        y = torch.as_tensor(bunch.target, dtype=torch.float64)
        x, y = _standardise(x), _standardise(y[:, None])[:, 0]
        return x.expand(len(seeds), -1, -1).clone(), y.expand(len(seeds), -1).clone()
    xs, ys = [], []
    for seed in seeds:
        gen = torch.Generator().manual_seed(derive_seed("lp-data", seed))
        basis = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0]
        scales = torch.logspace(0, -0.5 * torch.log10(torch.tensor(condition)).item(), dim)
        x = torch.randn(samples, dim, generator=gen, dtype=torch.float64) * scales @ basis.T
        w = torch.randn(dim, generator=gen, dtype=torch.float64) / dim**0.5
        y = x @ w + noise * torch.randn(samples, generator=gen, dtype=torch.float64)
        xs.append(_standardise(x))
        ys.append(_standardise(y[:, None])[:, 0])
    return torch.stack(xs), torch.stack(ys)


def lp_loss(x: Tensor, y: Tensor, w: Tensor, p: float) -> Tensor:
    """L(w) per problem: ``w`` (..., S, d) against x (S, m, d) -> (..., S)."""
    r = torch.einsum("smd,...sd->...sm", x, w) - y
    return r.abs().pow(p).mean(-1) / p


def lp_grad(x: Tensor, y: Tensor, w: Tensor, p: float) -> Tensor:
    """grad L(w) = (1/m) X^T (sign(r) |r|^(p-1)), same shape as ``w`` (..., S, d)."""
    r = torch.einsum("smd,...sd->...sm", x, w) - y
    g = r.sign() * r.abs().pow(p - 1)
    return torch.einsum("smd,...sm->...sd", x, g) / x.shape[-2]


def solve_lp(x: Tensor, y: Tensor, p: float, iters: int = 100) -> tuple[Tensor, Tensor]:
    """(w*, L*) per problem by Newton's method from the least-squares solution; the Hessian
    (p-1)/m X^T diag(|r|^(p-2)) X is positive definite for standardised full-rank X (a small
    ridge guards the last steps where residuals vanish)."""
    w = torch.linalg.lstsq(x, y[..., None]).solution[..., 0]
    if p == 2:
        return w, lp_loss(x, y, w, p)
    eye = torch.eye(x.shape[-1], dtype=x.dtype)
    for _ in range(iters):
        r = torch.einsum("smd,sd->sm", x, w) - y
        h = torch.einsum("smd,sm,sme->sde", x, (p - 1) * r.abs().pow(p - 2), x) / x.shape[-2]
        step = torch.linalg.solve(h + 1e-14 * eye, lp_grad(x, y, w, p)[..., None])[..., 0]
        w = w - step
        if float(step.abs().max()) < 1e-15:
            break
    return w, lp_loss(x, y, w, p)


def lp_problem(
    dataset: str,
    p: float,
    seeds: list[int],
    samples: int,
    dim: int,
    noise: float,
    condition: float = 1.0,
) -> LpProblem:
    """The stacked problems of ``seeds`` with their optima."""
    x, y = regression_data(dataset, seeds, samples, dim, noise, condition)
    w_opt, loss_opt = solve_lp(x, y, p)
    return LpProblem(x, y, p, w_opt, loss_opt)


__all__ = ["LpProblem", "lp_grad", "lp_loss", "lp_problem", "regression_data", "solve_lp"]
