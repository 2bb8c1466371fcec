"""Exact population loss of erf networks with standard Gaussian inputs.

For sigma(z) = erf(z / sqrt 2) and x ~ N(0, I_d) (Williams 1997; used by Saad & Solla 1995 and by
the teacher-student studies of Simsek et al. 2021 and Martinelli et al. 2026):

    E[sigma(w.x) sigma(v.x)] = (2/pi) arcsin( w.v / sqrt((1 + |w|^2)(1 + |v|^2)) ).

With student f(x) = A sigma(W x) and teacher f*(x) = A* sigma(W* x) (no biases) the population loss
L = 1/2 E|f(x) - f*(x)|^2 is a quadratic form in these kernels, so it costs O(m^2 d) and needs no
samples: it is the landscape of infinitely many data.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import Objective


def erf_kernel(w: Tensor, v: Tensor) -> Tensor:
    """E[erf(w.x/sqrt2) erf(v.x/sqrt2)] for rows of w (..., m, d) and v (..., k, d): (..., m, k)."""
    nw = torch.sqrt(1.0 + (w * w).sum(-1))
    nv = torch.sqrt(1.0 + (v * v).sum(-1))
    cos = (w @ v.transpose(-1, -2)) / (nw.unsqueeze(-1) * nv.unsqueeze(-2))
    return (2.0 / math.pi) * torch.asin(cos)


def check_population_arch(arch: Architecture) -> None:
    """Raise ValueError unless ``arch`` is a bias-free one-hidden-layer erf network."""
    if arch.activation != "erf":
        raise ValueError(
            f"the exact population loss needs activation 'erf', got {arch.activation!r}; "
            "use a finite sample (n_samples) for other activations"
        )
    if len(arch.widths) != 1:
        raise ValueError("the exact population loss needs exactly one hidden layer")
    if arch.bias or arch.output_bias:
        raise ValueError(
            "the exact population loss is implemented for bias-free networks; "
            "set bias=false or use a finite sample"
        )


class PopulationObjective(Objective):
    """L(theta) = 1/2 E_x |f_theta(x) - f_teacher(x)|^2 in closed form, for every member at once."""

    def __init__(self, arch: Architecture, teacher_arch: Architecture, teacher_theta: Tensor):
        check_population_arch(arch)
        check_population_arch(teacher_arch)
        if teacher_arch.d_in != arch.d_in or teacher_arch.d_out != arch.d_out:
            raise ValueError("student and teacher must share input and output dimensions")
        self.arch, self.teacher_arch, self.teacher_theta = arch, teacher_arch, teacher_theta
        t_layers = teacher_arch.unflatten(teacher_theta.reshape(-1))
        self.teacher_w, self.teacher_a = t_layers[0].weight, t_layers[1].weight
        k_tt = erf_kernel(self.teacher_w, self.teacher_w)
        self.teacher_term = 0.5 * (self.teacher_a @ k_tt * self.teacher_a).sum()

    def to(self, dtype: torch.dtype) -> PopulationObjective:
        if dtype == self.teacher_theta.dtype:
            return self
        return PopulationObjective(self.arch, self.teacher_arch, self.teacher_theta.to(dtype))

    def member_loss(self, theta: Tensor) -> Tensor:
        layers = self.arch.unflatten(theta)
        w, a = layers[0].weight, layers[1].weight
        tw = self.teacher_w.to(theta)
        ta = self.teacher_a.to(theta)
        self_term = 0.5 * (a @ erf_kernel(w, w) * a).sum()
        cross = (a @ erf_kernel(w, tw) * ta).sum()
        return self_term - cross + self.teacher_term.to(theta)
