"""Teacher networks and the data they label: the teacher-student problems of the experiments.

A teacher is a one-hidden-layer network (E = 1) with r* hidden units whose global minimum is
known: any student of width m >= r* can reach zero loss by copying it. Inputs are standard
Gaussian, x ~ N(0, I_d), either a finite sample or (for the activations and biases that
:func:`~escapelab.problems.population.check_population_arch` accepts) the exact population,
through :class:`~escapelab.problems.population.PopulationObjective`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import DataObjective, Objective
from escapelab.problems.population import PopulationObjective
from escapelab.seeding import derive_seed

Incoming = Literal["gaussian", "orthonormal"]
Outgoing = Literal["ones", "signs", "gaussian"]


@dataclass(frozen=True)
class Teacher:
    """A teacher network: its architecture and flat parameters (P,)."""

    arch: Architecture
    theta: Tensor

    @property
    def width(self) -> int:
        return self.arch.widths[0]

    def __call__(self, x: Tensor) -> Tensor:
        return self.arch.forward(self.theta.to(x), x)


def make_teacher(
    d: int,
    width: int,
    activation: str = "erf",
    incoming: Incoming = "orthonormal",
    outgoing: Outgoing = "ones",
    bias: bool = False,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> Teacher:
    """Draw a teacher with ``width`` hidden units on ``d`` inputs.

    incoming: "gaussian" rows N(0, I_d / d) (norm about 1) or "orthonormal" rows (needs width <= d),
    then multiplied by ``scale`` (larger scales make the units more nonlinear and the landscape
    harder); outgoing: all ones, random signs, or N(0, 1); biases, when on, are N(0, 1).
    """
    if incoming == "orthonormal" and width > d:
        raise ValueError(f"orthonormal incoming weights need width <= d, got width={width} > d={d}")
    gen = torch.Generator().manual_seed(derive_seed("teacher", seed))
    if incoming == "orthonormal":
        q, r = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        w = (q * torch.sign(torch.diagonal(r))).t()[:width]
    elif incoming == "gaussian":
        w = torch.randn(width, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    else:
        raise ValueError(f"unknown incoming {incoming!r}; allowed: gaussian, orthonormal")
    if outgoing == "ones":
        a = torch.ones(1, width, dtype=torch.float64)
    elif outgoing == "signs":
        a = torch.randint(0, 2, (1, width), generator=gen).to(torch.float64) * 2 - 1
    elif outgoing == "gaussian":
        a = torch.randn(1, width, generator=gen, dtype=torch.float64)
    else:
        raise ValueError(f"unknown outgoing {outgoing!r}; allowed: ones, signs, gaussian")
    arch = Architecture(d, (width,), 1, activation, bias=bias, output_bias=False)
    parts = [scale * w.reshape(-1)]
    if bias:
        parts.append(torch.randn(width, generator=gen, dtype=torch.float64))
    parts.append(a.reshape(-1))
    return Teacher(arch, torch.cat(parts).to(dtype))


def gaussian_inputs(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """n samples of x ~ N(0, I_d), reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(derive_seed("inputs", seed))
    return torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)


def student_objective(
    teacher: Teacher,
    student: Architecture,
    n_samples: int | None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Objective:
    """The student's loss against ``teacher``: on n_samples Gaussian inputs, or exact if None."""
    if n_samples is None:
        return PopulationObjective(
            student, teacher.arch, teacher.theta.to(dtype=dtype, device=device)
        )
    x = gaussian_inputs(n_samples, teacher.arch.d_in, seed)
    y = teacher(x)
    return DataObjective(
        student, x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)
    )
