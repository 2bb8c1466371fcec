"""Second-order refinement: drive every member to a critical point with a damped Newton method.

Each iteration takes the exact Hessian H = V diag(lambda) V^T of every active member and proposes

    delta = -V diag(1 / (|lambda| + mu)) V^T g,     mu = nu * max|lambda|,

the saddle-free Newton step of Dauphin et al. (2014) with Levenberg-Marquardt damping. With
|lambda| the step is a descent direction even where H is indefinite, so the refinement does not
walk uphill into saddles the first-order phase was leaving; near a minimum nu shrinks and the
iteration becomes Newton's method, converging quadratically to gradient norms of 1e-12 or below in
float64. A trial is accepted when the loss decreases (or stays within rounding while the gradient
shrinks, which is how progress looks at the bottom of a flat minimum: rounding is measured on
the terms the loss is summed from, ``Objective.loss_scale``, since a population loss of 1e-13
is a difference of O(1) kernel terms and cannot resolve a decrease of a few % there); nu is
divided by 3 on acceptance and multiplied by 5 on rejection, and rejected members reuse their
eigendecomposition.

With a ``free`` mask (E, P) the refinement runs in the subspace of the free coordinates: the
held ones (a pruned weight of a lottery ticket) keep their values, gradients and Hessians are
restricted to the rest, so a masked network is driven to a critical point of its own subspace.

The same machinery in ``critical`` mode takes Levenberg-Marquardt steps on 1/2 |grad L|^2 and
accepts whatever lowers the gradient norm: a search for critical points of any index, used to find
saddles near known endpoints (:func:`find_critical_points`).

Why not a quasi-Newton method: endpoints are classified by their exact Hessian anyway, the
parameter counts here are small (P up to a few hundred), and exact curvature gives quadratic
convergence on degenerate minima where BFGS stalls.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from escapelab.problems.objective import Objective

NU_START, NU_MIN, NU_MAX = 1e-3, 1e-15, 1e10
Mode = Literal["descent", "critical"]


def newton_direction(
    grad: Tensor, eigvals: Tensor, eigvecs: Tensor, nu: Tensor, mode: Mode = "descent"
) -> Tensor:
    """The damped Newton step for every member, (E, P).

    descent:  -V diag(1 / (|lambda| + mu)) V^T g (saddle-free; see the module docstring);
    critical: -V diag(lambda / (lambda^2 + mu^2)) V^T g, Levenberg-Marquardt on 1/2 |g|^2, whose
    Jacobian is H: it converges to critical points of any index, saddles included.
    """
    scale = eigvals.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)
    mu = nu.unsqueeze(1) * scale
    g_eig = torch.einsum("epk,ep->ek", eigvecs, grad)
    if mode == "descent":
        coef = g_eig / (eigvals.abs() + mu)
    else:
        coef = g_eig * eigvals / (eigvals.square() + mu.square())
    return -torch.einsum("epk,ek->ep", eigvecs, coef)


class NewtonRefiner:
    """State of the refinement for the members still active; see the module docstring."""

    def __init__(
        self,
        objective: Objective,
        theta: Tensor,
        loss: Tensor,
        grad: Tensor,
        mode: Mode = "descent",
        free: Tensor | None = None,
    ):
        self.objective, self.mode = objective, mode
        self.free = None if free is None else free.to(theta.dtype)
        self.theta, self.loss, self.grad = theta, loss, self._project(grad)
        self.nu = torch.full_like(loss, NU_START)
        self.eigvals, self.eigvecs = self._eigh(theta)

    def _project(self, v: Tensor, rows: Tensor | None = None) -> Tensor:
        """``v`` (E, P) with the held coordinates zeroed (rows: which members' masks)."""
        if self.free is None:
            return v
        return v * (self.free if rows is None else self.free[rows])

    def _eigh(self, theta: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Eigendecomposition of the Hessian restricted to the free coordinates: the rows and
        columns of held coordinates are zeroed, so their directions carry no step."""
        hessian = self.objective.hessian(theta)
        if self.free is not None:
            free = self.free if rows is None else self.free[rows]
            hessian = hessian * free.unsqueeze(2) * free.unsqueeze(1)
        return torch.linalg.eigh(hessian)

    def step(self) -> None:
        """One damped Newton iteration for every active member."""
        direction = newton_direction(self.grad, self.eigvals, self.eigvecs, self.nu, self.mode)
        trial = self.theta + self._project(direction)
        loss_t, grad_t = self.objective.loss_and_grad(trial)
        grad_t = self._project(grad_t)
        smaller_grad = grad_t.norm(dim=1) < self.grad.norm(dim=1)
        if self.mode == "descent":
            scale = self.loss.abs() + self.objective.loss_scale
            rounding = 64 * torch.finfo(self.loss.dtype).eps * scale
            better = (loss_t < self.loss) | ((loss_t <= self.loss + rounding) & smaller_grad)
        else:
            better = smaller_grad
        accept = torch.isfinite(loss_t) & torch.isfinite(grad_t).all(1) & better
        self.nu = torch.where(accept, self.nu / 3, self.nu * 5).clamp(NU_MIN, NU_MAX)
        if accept.any():
            rows = accept.nonzero().squeeze(1)
            self.theta[rows], self.loss[rows], self.grad[rows] = (
                trial[rows],
                loss_t[rows],
                grad_t[rows],
            )
            vals, vecs = self._eigh(self.theta[rows], rows)
            self.eigvals[rows], self.eigvecs[rows] = vals, vecs

    def keep(self, rows: Tensor) -> None:
        """Restrict the state to members ``rows`` (indices into the current active set)."""
        self.theta, self.loss, self.grad = self.theta[rows], self.loss[rows], self.grad[rows]
        if self.free is not None:
            self.free = self.free[rows]
        self.nu, self.eigvals, self.eigvecs = self.nu[rows], self.eigvals[rows], self.eigvecs[rows]


def find_critical_points(
    objective: Objective, theta0: Tensor, steps: int = 100, tol_grad: float = 1e-10
) -> tuple[Tensor, Tensor]:
    """Gradient-norm minimisation from every row of theta0 (E, P); returns the points reached and
    their gradient norms (converged where <= tol_grad; the rest are where the search stalled)."""
    loss, grad = objective.loss_and_grad(theta0)
    search = NewtonRefiner(objective, theta0.detach().clone(), loss, grad, mode="critical")
    for _ in range(steps):
        if bool((search.grad.norm(dim=1) <= tol_grad).all()):
            break
        search.step()
    return search.theta, search.grad.norm(dim=1)
