"""Low-rank matrix sensing with Gaussian measurements, the problem of the overparameterized
Burer-Monteiro experiments (Xu, Shen, Chi & Ma 2023, "The power of preconditioning in
overparameterized low-rank matrix sensing"; Zhang, Fattahi & Zhang 2023, "Preconditioned gradient
descent for overparameterized nonconvex Burer-Monteiro factorization with global optimality
certification").

Ground truth M* = U diag(s) U^T (n x n, rank r*, U orthonormal) with singular values log-spaced
from 1 down to 1/kappa. Measurements y_i = <A_i, M*> with A_i = (G_i + G_i^T) / 2, G_i of
i.i.d. N(0, 1) entries, so that E <A_i, M>^2 = |M|_F^2 for symmetric M. The loss of a factor
X (n x r) is f(X) = phi(X X^T), phi(M) = 1/(2m) sum_i (<A_i, M> - y_i)^2, with gradient
grad f(X) = 2 S X, S = grad phi(M) = (1/m) sum_i (<A_i, M> - y_i) A_i. Everything is stacked on a
leading axis of problems (one per seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SensingProblem:
    """Stacked problems: sensing matrices ``a`` (S, m, n*n), measurements ``y`` (S, m), truth
    ``m_star`` (S, n, n) and its non-zero singular values ``sigma`` (S, r*)."""

    a: Tensor
    y: Tensor
    m_star: Tensor
    sigma: Tensor


def sensing_problem(
    n: int, r_star: int, kappa: float, measurements: int, gens: list[torch.Generator]
) -> SensingProblem:
    """One problem per generator: truth of condition number ``kappa`` and its measurements."""
    sigma = torch.logspace(0, -torch.log10(torch.tensor(float(kappa))).item(), r_star)
    sigma = sigma.to(torch.float64)
    a_list, m_list = [], []
    for gen in gens:
        u = torch.linalg.qr(torch.randn(n, r_star, generator=gen, dtype=torch.float64))[0]
        m_list.append(u * sigma @ u.T)
        g = torch.randn(measurements, n, n, generator=gen, dtype=torch.float64)
        a_list.append(((g + g.mT) / 2).reshape(measurements, n * n))
    m_star = torch.stack(m_list)
    a = torch.stack(a_list)
    y = measure(a, m_star)
    return SensingProblem(a, y, m_star, sigma.expand(len(gens), -1).clone())


def measure(a: Tensor, m: Tensor) -> Tensor:
    """<A_i, M> for every problem: a (S, m, n*n), M (S, n, n) -> (S, m)."""
    return (a @ m.reshape(*m.shape[:-2], -1, 1))[..., 0]


def loss_and_dual(problem: SensingProblem, x: Tensor) -> tuple[Tensor, Tensor]:
    """(f(X), S) per problem: f (S,), S = grad phi(X X^T) (S, n, n)."""
    m = x @ x.mT
    r = measure(problem.a, m) - problem.y
    s = (r[..., None, :] @ problem.a)[..., 0, :].reshape(m.shape) / r.shape[-1]
    return 0.5 * r.square().mean(-1), s


def relative_error(problem: SensingProblem, x: Tensor) -> Tensor:
    """|X X^T - M*|_F / |M*|_F per problem."""
    diff = torch.linalg.matrix_norm(x @ x.mT - problem.m_star)
    return diff / torch.linalg.matrix_norm(problem.m_star)


def optimality_gap_bound(x: Tensor, s: Tensor, trace_bound: Tensor) -> Tensor:
    """An upper bound on f(X) - f* from convexity of phi over the PSD cone (a duality gap):
    phi(M*) >= phi(M) + <S, M* - M> >= phi(M) - <S, M> + min(0, lambda_min(S)) tr(M*), so
    f(X) - f* <= <S, X X^T> + max(0, -lambda_min(S)) * ``trace_bound`` with tr(M*) <=
    trace_bound. When S is positive semidefinite -- what a second-order point with rank-deficient
    X (r > r*) gives, the certificate of Zhang, Fattahi & Zhang (2023) -- the bound
    <S, X X^T> = <grad f(X), X> / 2 needs no knowledge of M*."""
    inner = (s * (x @ x.mT)).sum((-2, -1))
    lam_min = torch.linalg.eigvalsh(s)[..., 0]
    return inner + (-lam_min).clamp_min(0) * trace_bound


__all__ = [
    "SensingProblem",
    "loss_and_dual",
    "measure",
    "optimality_gap_bound",
    "relative_error",
    "sensing_problem",
]
