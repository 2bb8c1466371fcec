"""Wide two-layer networks in the NTK parameterisation, stacked on an ensemble axis, and their
neural tangent kernel in closed form: the model of the catapult experiment (Lewkowycz,
Bahri, Dyer, Sohl-Dickstein & Gur-Ari 2020, "The large learning rate phase of deep learning:
the catapult mechanism").

f(x) = v . sigma(U x / sqrt(d)) / sqrt(n) with U (n, d), v (n), entries N(0, 1) at init,
sigma = identity (``linear``) or ReLU. With the half-MSE loss L = 1/(2m) sum_i (f(x_i) - y_i)^2
the Gauss-Newton part of the Hessian, J^T J / m, has the same non-zero eigenvalues as the NTK
Gram matrix Theta = J J^T / m, so gradient descent on the linearised model is stable for
eta < 2 / lambda_max(Theta).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ACTIVATIONS = ("linear", "relu")


def _act(z: Tensor, activation: str) -> tuple[Tensor, Tensor]:
    """(sigma(z), sigma'(z))."""
    if activation == "linear":
        return z, torch.ones_like(z)
    return z.clamp_min(0), (z > 0).to(z.dtype)


def forward(u: Tensor, v: Tensor, x: Tensor, activation: str) -> Tensor:
    """f for every member: U (E, n, d), v (E, n), x (m, d) -> (E, m)."""
    n, d = u.shape[-2:]
    h, _ = _act(x @ u.mT / math.sqrt(d), activation)
    return (h @ v[..., None])[..., 0] / math.sqrt(n)


def ntk_gram(u: Tensor, v: Tensor, x: Tensor, activation: str) -> Tensor:
    """Theta = J J^T / m per member, (E, m, m):
    Theta_ij = [sigma(z_i) . sigma(z_j) + (x_i . x_j / d) sum_k v_k^2 sigma'(z_ik) sigma'(z_jk)]
    / (n m), the first term from v, the second from U."""
    n, d = u.shape[-2:]
    m = x.shape[0]
    h, dh = _act(x @ u.mT / math.sqrt(d), activation)
    b = dh * v[:, None, :]
    return (h @ h.mT + (x @ x.T / d) * (b @ b.mT)) / (n * m)


def top_ntk_eigenvalue(u: Tensor, v: Tensor, x: Tensor, activation: str) -> Tensor:
    """lambda_max(Theta) per member, (E,)."""
    return torch.linalg.eigvalsh(ntk_gram(u, v, x, activation))[..., -1]


class TwoLayer(nn.Module):
    """One member as a ``torch.nn.Module`` (for :mod:`escapelab.landscape.curvature`)."""

    def __init__(self, u: Tensor, v: Tensor, activation: str):
        super().__init__()
        self.u = nn.Parameter(u.clone())
        self.v = nn.Parameter(v.clone())
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return forward(self.u[None], self.v[None], x, self.activation)[0]


def half_mse(out: Tensor, y: Tensor) -> Tensor:
    """1/(2m) sum (out - y)^2, the loss whose Hessian the curvature tools see."""
    return 0.5 * (out - y).square().mean()


__all__ = ["ACTIVATIONS", "TwoLayer", "forward", "half_mse", "ntk_gram", "top_ntk_eigenvalue"]
