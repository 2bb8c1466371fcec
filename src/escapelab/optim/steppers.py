"""First-order update rules for a whole ensemble, with per-member state that can be dropped.

``torch.optim`` treats a parameter tensor as one unit; the trainer instead freezes members as they
stop, so these steppers keep state per row and can ``keep`` a subset of rows. The Adam update is
the one of ``torch.optim.Adam`` (Kingma & Ba 2015, bias-corrected, eps added after the square
root), so a member follows the same trajectory as a lone network trained with torch's optimizer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class GradientDescent:
    """theta <- theta - lr * grad."""

    def __init__(self, lr: float):
        self.lr = lr

    def step(self, theta: Tensor, grad: Tensor) -> None:
        theta.add_(grad, alpha=-self.lr)

    def keep(self, rows: Tensor) -> None:
        """Drop the state of members not in ``rows`` (GD has none)."""


class Adam:
    """Adam with per-member moments; one shared step counter (members start together)."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m: Tensor | None = None
        self.v: Tensor | None = None

    def step(self, theta: Tensor, grad: Tensor) -> None:
        if self.m is None or self.v is None:
            self.m, self.v = torch.zeros_like(theta), torch.zeros_like(theta)
        b1, b2 = self.betas
        self.t += 1
        self.m.lerp_(grad, 1.0 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        step_size = self.lr / (1.0 - b1**self.t)
        denom = (self.v.sqrt() / math.sqrt(1.0 - b2**self.t)).add_(self.eps)
        theta.addcdiv_(self.m, denom, value=-step_size)

    def keep(self, rows: Tensor) -> None:
        """Keep only the moments of members ``rows`` (indices into the current active set)."""
        if self.m is not None and self.v is not None:
            self.m, self.v = self.m[rows], self.v[rows]


def make_stepper(
    name: str, lr: float, betas: tuple[float, float], eps: float
) -> Adam | GradientDescent:
    if name == "adam":
        return Adam(lr, betas, eps)
    if name == "gd":
        return GradientDescent(lr)
    raise ValueError(f"unknown optimizer {name!r}; allowed: adam, gd")
