"""Pieces the teacher-student experiments share: spec sections and the train-and-classify step.

Every teacher-student experiment names its teacher (:class:`TeacherSpec`), its students
(:class:`StudentSpec`) and how to train them (:class:`TrainSpec`) the same way, so a student of
width m with seed i is the same network in every experiment: its initial weights depend only on
the student seed, m and i.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from escapelab.config import SpecError, constraint
from escapelab.experiments.base import Task
from escapelab.landscape.classify import ClassifyConfig, Endpoint, classify
from escapelab.nets.activations import ACTIVATIONS
from escapelab.nets.mlp import Architecture, derive_seed
from escapelab.optim.train import TrainConfig, TrainResult, train
from escapelab.problems.objective import Objective
from escapelab.problems.teacher import Teacher, make_teacher, student_objective

ActivationName = Literal["erf", "tanh", "softplus", "sigmoid", "relu", "linear"]
assert set(ActivationName.__args__) == set(ACTIVATIONS)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TeacherSpec:
    """The teacher: r* = ``width`` hidden units on ``d`` Gaussian inputs."""

    d: int = field(default=2, metadata=constraint(ge=1, help="input dimension"))
    width: int = field(default=4, metadata=constraint(ge=1, help="hidden units r*"))
    activation: ActivationName = "erf"
    incoming: Literal["gaussian", "orthonormal"] = "gaussian"
    outgoing: Literal["ones", "signs", "gaussian"] = "ones"
    scale: float = field(default=2.0, metadata=constraint(gt=0, help="incoming weight scale"))
    bias: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.incoming == "orthonormal" and self.width > self.d:
            raise SpecError(
                "teacher.width",
                f"orthonormal incoming weights need width <= d (width={self.width}, d={self.d}); "
                "lower the width, raise d, or use incoming=gaussian",
            )


@dataclass(frozen=True)
class StudentSpec:
    """The students: ``seeds`` independent initializations at every width in ``widths``."""

    widths: tuple[int, ...] = field(
        default=(4, 5, 6, 7, 8, 10, 12), metadata=constraint(ge=1, unordered=True)
    )
    seeds: int = field(default=48, metadata=constraint(ge=1, help="members per width"))
    init: Literal["glorot", "he", "normal"] = "glorot"
    init_scale: float = field(default=1.0, metadata=constraint(gt=0))
    bias: bool = False
    seed: int = 0


@dataclass(frozen=True)
class TrainSpec:
    """Optimizer, refinement, tolerances and precision."""

    optimizer: Literal["adam", "gd"] = "adam"
    lr: float = field(default=0.01, metadata=constraint(gt=0))
    steps: int = field(default=4000, metadata=constraint(ge=0))
    refine_steps: int = field(default=60, metadata=constraint(ge=0))
    tol_grad: float = field(default=1e-10, metadata=constraint(gt=0))
    tol_global: float = field(default=1e-9, metadata=constraint(gt=0))
    tol_eig: float = field(default=1e-6, metadata=constraint(ge=0))
    max_norm: float = field(default=1e3, metadata=constraint(gt=0))
    precision: Literal["float32", "float64"] = "float64"


def check_population(n_samples: int | None, teacher: TeacherSpec, student_bias: bool) -> None:
    """The exact population loss (n_samples = None) needs erf units and no biases."""
    if n_samples is not None:
        return
    if teacher.activation != "erf":
        raise SpecError(
            "teacher.activation",
            f"the exact population loss (n_samples = null) needs erf, got {teacher.activation!r}; "
            "set n_samples to a sample count or use activation erf",
        )
    for name, value in (("teacher.bias", teacher.bias), ("student.bias", student_bias)):
        if value:
            raise SpecError(name, "the exact population loss (n_samples = null) needs bias = false")


def build_teacher(t: TeacherSpec) -> Teacher:
    """The teacher network a spec describes."""
    return make_teacher(t.d, t.width, t.activation, t.incoming, t.outgoing, t.bias, t.seed, t.scale)


def dtype_of(tr: TrainSpec) -> torch.dtype:
    return torch.float64 if tr.precision == "float64" else torch.float32


def student_arch(t: TeacherSpec, width: int, bias: bool) -> Architecture:
    """A one-hidden-layer student of ``width`` units for teacher ``t``."""
    return Architecture(t.d, (width,), 1, t.activation, bias=bias, output_bias=False)


def problem(
    t: TeacherSpec,
    arch: Architecture,
    n_samples: int | None,
    data_seed: int,
    tr: TrainSpec,
    device: torch.device,
) -> Objective:
    """The student's objective: n_samples Gaussian inputs, or the exact population loss."""
    return student_objective(build_teacher(t), arch, n_samples, data_seed, dtype_of(tr), device)


def student_init(
    arch: Architecture, s: StudentSpec, lo: int, hi: int, tr: TrainSpec, device: torch.device
) -> torch.Tensor:
    """Initial weights of members lo..hi-1 of the width-``arch.widths[0]`` students."""
    width = arch.widths[0]
    return arch.init(
        hi - lo,
        derive_seed("student", s.seed, width),
        s.init,
        s.init_scale,
        first_member=lo,
        dtype=dtype_of(tr),
        device=device,
    )


def train_and_classify(
    objective: Objective, theta0: torch.Tensor, tr: TrainSpec
) -> tuple[TrainResult, list[Endpoint]]:
    """Train every member to its endpoint and classify it with the spec's tolerances."""
    config = TrainConfig(
        optimizer=tr.optimizer,
        lr=tr.lr,
        steps=tr.steps,
        refine_steps=tr.refine_steps,
        tol_grad=tr.tol_grad,
        tol_global=tr.tol_global,
        max_norm=tr.max_norm,
    )
    result = train(objective, theta0, config)
    endpoints = classify(
        objective, result, ClassifyConfig(tol_global=tr.tol_global, tol_eig=tr.tol_eig)
    )
    return result, endpoints


@dataclass(frozen=True)
class TeacherStudentSpec:
    """The sections every teacher-student experiment shares; experiments subclass it.
    ``n_samples`` = None means the exact population loss (erf, no biases)."""

    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    student: StudentSpec = field(default_factory=StudentSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    n_samples: int | None = field(default=None, metadata=constraint(ge=1))
    data_seed: int = 0
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: one task per width")
    )

    def __post_init__(self) -> None:
        check_population(self.n_samples, self.teacher, self.student.bias)


def seed_block_tasks(spec: TeacherStudentSpec, label: str = "m") -> list[Task]:
    """One task per student width and block of ``seeds_per_task`` seeds (0: all seeds);
    params: the width ``m`` and the member range [lo, hi)."""
    seeds = spec.student.seeds
    block = spec.seeds_per_task or seeds
    return [
        Task(
            f"{label}={m:04d}/seeds={lo:05d}-{min(lo + block, seeds) - 1:05d}",
            {"m": m, "lo": lo, "hi": min(lo + block, seeds)},
        )
        for m in sorted(set(spec.student.widths))
        for lo in range(0, seeds, block)
    ]
