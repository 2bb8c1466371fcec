"""The end-to-end dynamics of depth-N linear networks (Arora, Cohen & Hazan, ICML 2018,
"On the optimization of deep networks: implicit acceleration by overparameterization").

For a depth-N linear network w_e = W_N ... W_1 with a single output trained by gradient descent
from balanced factors (W_{j+1}^T W_{j+1} = W_j W_j^T), the end-to-end vector moves, to first
order in the learning rate eta, as (the paper's eq. for one output)

    w_e <- w_e - eta |w_e|^(2 - 2/N) (g + (N - 1) (u . g) u),   g = grad L(w_e), u = w_e / |w_e|

a preconditioner that grows with |w_e| and favours the direction already taken. This module
gives that update and factors that are exactly balanced with a given product.
"""

from __future__ import annotations

import torch
from torch import Tensor


def end_to_end_preconditioned(w: Tensor, g: Tensor, depth: int) -> Tensor:
    """P(w) g = |w|^(2 - 2/N) (g + (N - 1) (u . g) u) over the last axis (any leading axes)."""
    norm = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
    u = w / norm.clamp_min(torch.finfo(w.dtype).tiny)
    along = (u * g).sum(-1, keepdim=True) * u
    return norm.pow(2 - 2 / depth) * (g + (depth - 1) * along)


def balanced_factors(w: Tensor, depth: int, hidden: int, gen: torch.Generator) -> list[Tensor]:
    """Factors W_1 (S, h, d), W_2..W_{N-1} (S, h, h), W_N (S, 1, h) with W_N ... W_1 = w (S, d)
    and W_{j+1}^T W_{j+1} = W_j W_j^T exactly: W_1 = c a_1 u^T, W_j = c a_j a_{j-1}^T,
    W_N = c a_{N-1}^T with unit vectors a_j drawn from ``gen`` and c = |w|^(1/N)."""
    s, _ = w.shape
    norm = torch.linalg.vector_norm(w, dim=-1)
    c = norm.pow(1 / depth)[:, None, None]
    u = w / norm[:, None]
    a = torch.randn(depth - 1, s, hidden, generator=gen, dtype=w.dtype)
    a = a / torch.linalg.vector_norm(a, dim=-1, keepdim=True)
    factors = [c * a[0][:, :, None] * u[:, None, :]]
    for j in range(1, depth - 1):
        factors.append(c * a[j][:, :, None] * a[j - 1][:, None, :])
    factors.append(c * a[-1][:, None, :])
    return factors


def end_to_end(factors: list[Tensor]) -> Tensor:
    """w_e = W_N ... W_1 as (..., S, d) for factors with leading axes (..., S, ., .)."""
    out = factors[0]
    for f in factors[1:]:
        out = f @ out
    return out[..., 0, :]


__all__ = ["balanced_factors", "end_to_end", "end_to_end_preconditioned"]
