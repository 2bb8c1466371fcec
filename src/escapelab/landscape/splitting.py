"""The splitting matrix B of Fukumizu & Amari (2000), which decides what neuron splitting yields.

Split unit j of a critical point theta into two copies with outgoing weights gamma * a_j and
(1 - gamma) * a_j. Along the antisymmetric direction (w_j + v, w_j' - v) the loss has curvature
gamma (1 - gamma) v^T B v (Fukumizu & Amari 2000; Simsek et al. 2021, Prop. 4), with

    B = a_j E[ sigma''(w_j . xt) xt xt^T dl/df ] = a_j Hess_w E[ sigma(w . xt) r(x) ] at w = w_j,

r = f - y the residual (dl/df of the half squared error) held fixed, xt = (x, 1) with biases.
Every other direction keeps the curvature of theta, so a local minimum theta embeds as

* a local minimum for gamma in (0, 1) if B is positive definite (for gamma outside [0, 1] if
  B is negative definite), and
* a saddle otherwise: in particular for every gamma when B is indefinite.

For data objectives B is a sample average; for population losses it is the Hessian in w (and the
bias, when on) of sum_k a_k K(w, w_k) - sum_k a*_k K(w, w*_k) with the objective's population
kernel K (closed form or quadrature), so it is exact too.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from escapelab.problems.objective import DataObjective, Objective
from escapelab.problems.population import PopulationObjective

BClass = Literal["positive", "negative", "indefinite", "degenerate"]


def splitting_matrix(objective: Objective, theta: Tensor, unit: int) -> Tensor:
    """B (d~, d~) for hidden unit ``unit`` of a one-hidden-layer network theta (P,)."""
    arch = objective.arch
    if len(arch.widths) != 1 or arch.d_out != 1:
        raise ValueError("the splitting matrix is implemented for one hidden layer, one output")
    first, last = arch.unflatten(theta)
    a_j = last.weight[0, unit]
    if isinstance(objective, DataObjective):
        x = objective.x
        xt = torch.cat([x, torch.ones_like(x[:, :1])], 1) if arch.bias else x
        w = (
            first.weight[unit]
            if first.bias is None
            else torch.cat([first.weight[unit], first.bias[unit : unit + 1]])
        )
        residual = (arch.forward(theta, x) - objective.y).squeeze(1)
        weights = arch.act.d2(xt @ w) * residual / x.shape[0]
        return a_j * (xt * weights.unsqueeze(1)).t() @ xt
    if isinstance(objective, PopulationObjective):
        student_w, student_b, student_a = first.weight, first.bias, last.weight[0]
        teacher_w = objective.teacher_w.to(theta)
        teacher_b = None if objective.teacher_b is None else objective.teacher_b.to(theta)
        teacher_a = objective.teacher_a.to(theta)[0]
        d = arch.d_in
        if student_b is None and teacher_b is not None:
            student_b = torch.zeros_like(student_a)
        if teacher_b is None and student_b is not None:
            teacher_b = torch.zeros_like(teacher_a)

        def overlap(wt: Tensor) -> Tensor:
            w = wt[:d].unsqueeze(0)
            b = None if student_b is None else wt[d:]
            k_s = objective.kernel(w, student_w, b, student_b)[0]
            k_t = objective.kernel(w, teacher_w, b, teacher_b)[0]
            return k_s @ student_a - k_t @ teacher_a

        wt = first.weight[unit]
        if arch.bias:
            wt = torch.cat([wt, first.bias[unit : unit + 1]])
        return a_j * torch.func.hessian(overlap)(wt)
    raise TypeError(f"no splitting matrix for {type(objective).__name__}")


def classify_b(eigenvalues: Tensor, rel_tol: float = 1e-8) -> BClass:
    """Definiteness of B from its eigenvalues, with a tolerance relative to the largest |value|."""
    scale = float(eigenvalues.abs().max())
    tol = rel_tol * scale
    if scale == 0.0 or bool((eigenvalues.abs() <= tol).any()):
        return "degenerate"
    if bool((eigenvalues > 0).all()):
        return "positive"
    if bool((eigenvalues < 0).all()):
        return "negative"
    return "indefinite"


def predicts_saddle(b_class: BClass, gamma: float) -> bool | None:
    """What B predicts for split parameter gamma: True saddle, False minimum, None undecided."""
    inside = 0.0 < gamma < 1.0
    if b_class == "indefinite":
        return True
    if b_class == "positive":
        return not inside
    if b_class == "negative":
        return inside
    return None
