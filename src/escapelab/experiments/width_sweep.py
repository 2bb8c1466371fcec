"""E1 (success probability vs width) with the multi-start predictions of E2.

Students of several widths m learn a teacher of width r*; every student (one seed = one ensemble
member) is trained to a true endpoint and classified exactly. Per width the summary gives the
class counts, P(global minimum) with a Wilson 95 % interval, and the literal-lottery predictions
P(m) = 1 - (1 - p)^K(m) from the p measured at m = r* (see :mod:`escapelab.theory.multistart`).
A task is one width and one block of seeds; member i's initial weights depend only on the student
seed, the width and i, so results do not depend on how seeds are split into tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from escapelab.config import SpecError, constraint
from escapelab.experiments.base import Task
from escapelab.landscape.classify import CLASSES, ClassifyConfig, classify
from escapelab.nets.activations import ACTIVATIONS
from escapelab.nets.mlp import Architecture, derive_seed
from escapelab.optim.train import TrainConfig, train
from escapelab.problems.teacher import make_teacher, student_objective
from escapelab.theory.multistart import multistart_prediction, wilson_interval

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

    widths: tuple[int, ...] = field(default=(4, 5, 6, 7, 8, 10, 12), metadata=constraint(ge=1))
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


@dataclass(frozen=True)
class WidthSweepSpec:
    """The width sweep. ``n_samples`` = None means the exact population loss (erf, no biases)."""

    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    student: StudentSpec = field(default_factory=StudentSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    n_samples: int | None = field(default=None, metadata=constraint(ge=1))
    data_seed: int = 0
    seeds_per_task: int = field(default=0, metadata=constraint(ge=0, help="0: one task per width"))

    def __post_init__(self) -> None:
        if self.n_samples is None:
            for name, value in (("teacher.activation", self.teacher.activation),):
                if value != "erf":
                    raise SpecError(
                        name,
                        f"the exact population loss (n_samples = null) needs erf, got {value!r}; "
                        "set n_samples to a sample count or use activation erf",
                    )
            for name, value in (
                ("teacher.bias", self.teacher.bias),
                ("student.bias", self.student.bias),
            ):
                if value:
                    raise SpecError(
                        name, "the exact population loss (n_samples = null) needs bias = false"
                    )


def _dtype(spec: WidthSweepSpec) -> torch.dtype:
    return torch.float64 if spec.train.precision == "float64" else torch.float32


class WidthSweep:
    """The ``width-sweep`` experiment (E1 + the formula part of E2)."""

    name = "width-sweep"
    spec_type = WidthSweepSpec
    description = "success probability vs student width, with the multi-start predictions"

    def tasks(self, spec: WidthSweepSpec) -> list[Task]:
        block = spec.seeds_per_task or spec.student.seeds
        out = []
        for m in sorted(set(spec.student.widths)):
            for lo in range(0, spec.student.seeds, block):
                hi = min(lo + block, spec.student.seeds)
                out.append(
                    Task(f"m={m:04d}/seeds={lo:05d}-{hi - 1:05d}", {"m": m, "lo": lo, "hi": hi})
                )
        return out

    def run_task(
        self, spec: WidthSweepSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        m, lo, hi = task.params["m"], task.params["lo"], task.params["hi"]
        t, s, tr = spec.teacher, spec.student, spec.train
        dtype = _dtype(spec)
        teacher = make_teacher(
            t.d, t.width, t.activation, t.incoming, t.outgoing, t.bias, t.seed, t.scale
        )
        arch = Architecture(t.d, (m,), 1, t.activation, bias=s.bias, output_bias=False)
        objective = student_objective(teacher, arch, spec.n_samples, spec.data_seed, dtype, device)
        theta0 = arch.init(
            hi - lo,
            derive_seed("student", s.seed, m),
            s.init,
            s.init_scale,
            first_member=lo,
            dtype=dtype,
            device=device,
        )
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
        share = result.wall_time / max(1, hi - lo)
        return [
            {"width": m, "member": lo + i, **ep.to_dict(), "wall_time": share}
            for i, ep in enumerate(endpoints)
        ]

    def summarize(
        self, spec: WidthSweepSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """One row per width: counts by class, P(global) with its Wilson interval, predictions."""
        r_star = spec.teacher.width
        rows = []
        for m in sorted({int(r["width"]) for r in records}):
            mine = [r for r in records if r["width"] == m]
            counts = {c: sum(r["kind"] == c for r in mine) for c in CLASSES}
            n, k = len(mine), counts["global_min"]
            lo, hi = wilson_interval(k, n)
            rows.append(
                {"width": m, "n": n, "p_global": k / n, "ci_low": lo, "ci_high": hi, **counts}
            )
        base = next((row for row in rows if row["width"] == r_star), None)
        for row in rows:
            for mode in ("subsets", "disjoint"):
                row[f"pred_{mode}"] = (
                    multistart_prediction(base["p_global"], row["width"], r_star, mode)
                    if base is not None
                    else float("nan")
                )
        return rows

    def figures(
        self, spec: WidthSweepSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.figures import plot_loss_by_width, plot_success_vs_width

        rows = self.summarize(spec, records)
        title = (
            f"teacher r*={spec.teacher.width}, d={spec.teacher.d}, {spec.teacher.activation}, "
            + ("population loss" if spec.n_samples is None else f"N={spec.n_samples}")
        )
        return [
            plot_success_vs_width(
                rows, spec.teacher.width, out_dir / "p_global_vs_width.png", title
            ),
            plot_loss_by_width(records, out_dir / "final_loss_by_width.png", title),
        ]
