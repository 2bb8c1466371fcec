"""E6, classic lottery tickets: IMP with its controls on MNIST-1D and scikit-learn's digits (and,
as a regression, on the teacher-student problems).

For every dataset, ``seeds`` networks run iterative magnitude pruning (:mod:`escapelab.tickets.imp`)
as one stacked ensemble. Every level records, per seed, the ticket and its two controls (the
ticket's mask with fresh weights, and a random mask with the ticket's per-layer counts): test
accuracy at the end and at the early-stopping step, that step, the density and the fraction of
weight signs that flipped since the rewind point. Frankle & Carbin (2019) found that tickets match
or beat the dense network down to moderate sparsity, learn faster (earlier early-stopping step)
and beat re-initialization at high sparsity; the figures put the three curves side by side.

Each task (one dataset, one block of seeds) checkpoints every finished level in the directory the
runner gives it, and resumes there after an interruption.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from escapelab.config import SpecError, constraint
from escapelab.data.classification import ClassificationData, load_dataset
from escapelab.data.teacher_student import teacher_student_data
from escapelab.experiments.base import Task
from escapelab.experiments.common import TeacherSpec, build_teacher
from escapelab.nets.classifiers import build_model
from escapelab.nets.mlp import derive_seed
from escapelab.nets.stacked import StackedModel
from escapelab.optim.supervised import FitConfig
from escapelab.tickets.imp import ROLES, IMPConfig, run_imp


@dataclass(frozen=True)
class ClassifierSpec:
    """The network: an MLP with ``hidden`` widths, or the MNIST-1D paper's 1-D CNN."""

    model: Literal["mlp", "cnn1d"] = "mlp"
    hidden: tuple[int, ...] = field(default=(100, 100), metadata=constraint(ge=1))
    channels: int = field(default=25, metadata=constraint(ge=1, help="cnn1d only"))
    activation: Literal["relu", "erf", "tanh", "softplus", "sigmoid", "linear"] = "relu"

    @property
    def label(self) -> str:
        """E.g. ``mlp 100-100`` or ``cnn1d 25 channels``."""
        if self.model == "cnn1d":
            return f"cnn1d {self.channels} channels"
        return f"mlp {'-'.join(map(str, self.hidden))} {self.activation}"


@dataclass(frozen=True)
class DataSpec:
    """Which datasets, the data variant (seed) and the validation share of the training set.
    ``teacher`` is the teacher-student regression problem of ``teacher`` with ``n_train`` and
    ``n_test`` Gaussian samples (half the mean squared error; no accuracy)."""

    datasets: tuple[Literal["mnist1d", "digits", "teacher"], ...] = ("mnist1d", "digits")
    seed: int = 0
    val_fraction: float = field(default=0.1, metadata=constraint(gt=0, lt=1))
    teacher: TeacherSpec = field(default_factory=lambda: TeacherSpec(d=8, width=4))
    n_train: int = field(default=4000, metadata=constraint(ge=2, help="teacher only"))
    n_test: int = field(default=1000, metadata=constraint(ge=1, help="teacher only"))


@dataclass(frozen=True)
class LotterySpec:
    """IMP to high sparsity with controls, on every dataset, for ``seeds`` networks."""

    data: DataSpec = field(default_factory=DataSpec)
    net: ClassifierSpec = field(default_factory=ClassifierSpec)
    fit: FitConfig = field(default_factory=FitConfig)
    imp: IMPConfig = field(default_factory=IMPConfig)
    seeds: int = field(default=4, metadata=constraint(ge=1, help="networks per dataset"))
    seed: int = 0
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: all seeds")
    )

    def __post_init__(self) -> None:
        if not self.data.datasets:
            raise SpecError("data.datasets", "name at least one of: mnist1d, digits")
        if len(set(self.data.datasets)) != len(self.data.datasets):
            raise SpecError("data.datasets", f"datasets must be distinct: {self.data.datasets}")
        if self.imp.rewind == "step" and self.imp.rewind_step >= self.fit.steps:
            raise SpecError(
                "imp.rewind_step",
                f"must be below fit.steps = {self.fit.steps}, got {self.imp.rewind_step}",
            )


def load_task_data(spec: DataSpec, name: str, device: torch.device) -> ClassificationData:
    """The dataset ``name`` as the spec asks for it, on ``device``."""
    if name == "teacher":
        teacher = build_teacher(spec.teacher)
        data = teacher_student_data(
            teacher, spec.n_train, spec.n_test, spec.seed, spec.val_fraction
        )
        return data.to(device)
    return load_dataset(name, seed=spec.seed, val_fraction=spec.val_fraction).to(device)


def stacked_classifier(
    net: ClassifierSpec, data: ClassificationData, device: torch.device
) -> StackedModel:
    """A stacked ensemble of the spec's network for ``data``'s inputs and classes."""

    outputs = data.y_train.shape[1] if data.regression else data.n_classes

    def factory() -> torch.nn.Module:
        return build_model(
            net.model,
            data.input_shape,
            outputs,
            hidden=net.hidden,
            channels=net.channels,
            activation=net.activation,
        )

    return StackedModel(factory, device=device)


def network_seeds(spec: LotterySpec, dataset: str, lo: int, hi: int) -> list[int]:
    """Initialization seeds of networks lo..hi-1 on ``dataset``."""
    return [derive_seed("lottery", spec.seed, dataset, i) for i in range(lo, hi)]


def dataset_seed_tasks(
    datasets: tuple[str, ...], seeds: int, per_task: int, prefix: str = "", **params: Any
) -> list[Task]:
    """One task per dataset and block of ``per_task`` seeds (0: all); params: ``dataset``, the
    seed range [lo, hi) and ``params``; keys ``{prefix}data=NAME/seeds=LO-HI``."""
    block = per_task or seeds
    return [
        Task(
            f"{prefix}data={name}/seeds={lo:05d}-{min(lo + block, seeds) - 1:05d}",
            {**params, "dataset": name, "lo": lo, "hi": min(lo + block, seeds)},
        )
        for name in datasets
        for lo in range(0, seeds, block)
    ]


def spread(key: str, values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max of ``values`` as
    ``key``, ``key_std``, ``key_min``, ``key_max``; all nan when a value is nan (no accuracy on
    regression data, or a diverged run)."""
    if any(math.isnan(v) for v in values):
        return dict.fromkeys((key, f"{key}_std", f"{key}_min", f"{key}_max"), math.nan)
    return {
        key: statistics.fmean(values),
        f"{key}_std": statistics.stdev(values) if len(values) > 1 else 0.0,
        f"{key}_min": min(values),
        f"{key}_max": max(values),
    }


class Lottery:
    """The ``lottery`` experiment (E6: IMP tickets vs random re-init vs random masks)."""

    name = "lottery"
    spec_type = LotterySpec
    description = "iterative magnitude pruning with rewinding: tickets vs re-init vs random masks"

    def tasks(self, spec: LotterySpec) -> list[Task]:
        return dataset_seed_tasks(spec.data.datasets, spec.seeds, spec.seeds_per_task)

    def run_task(self, spec: LotterySpec, task: Task, device: torch.device) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        name, lo, hi = task.params["dataset"], task.params["lo"], task.params["hi"]
        data = load_task_data(spec.data, name, device)
        model = stacked_classifier(spec.net, data, device)
        seeds = network_seeds(spec, name, lo, hi)
        member = {s: lo + i for i, s in enumerate(seeds)}
        with tqdm(total=spec.imp.levels + 1, desc=f"IMP {name}", unit="level", leave=False) as bar:
            records = run_imp(
                model,
                data,
                spec.fit,
                spec.imp,
                seeds,
                task.checkpoint_dir,
                on_level=lambda level, _: bar.update(),
            ).records
        return [{"dataset": name, "member": member[r["seed"]], **r} for r in records]

    def summarize(self, spec: LotterySpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per dataset, level and role: means and spreads over seeds."""
        rows = []
        keys = sorted(
            {(r["dataset"], r["level"], r["role"]) for r in records},
            key=lambda k: (spec.data.datasets.index(k[0]), k[1], ROLES.index(k[2])),
        )
        for dataset, level, role in keys:
            mine = [
                r
                for r in records
                if r["dataset"] == dataset and r["level"] == level and r["role"] == role
            ]
            row: dict[str, Any] = {
                "dataset": dataset,
                "level": level,
                "role": role,
                "n": len(mine),
                "density": statistics.fmean(r["density"] for r in mine),
            }
            for key in ("test_acc_es", "test_loss_es", "es_step"):
                row.update(spread(key, [float(r[key]) for r in mine]))
            row["test_acc"] = statistics.fmean(r["test_acc"] for r in mine)
            row["sign_flip"] = statistics.fmean(r["sign_flip"] for r in mine)
            row["diverged"] = sum(bool(r["diverged"]) for r in mine)
            rows.append(row)
        return rows

    def figures(
        self, spec: LotterySpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.ticket_figures import plot_lottery

        rows = self.summarize(spec, records)
        paths = []
        for dataset in spec.data.datasets:
            mine = [r for r in rows if r["dataset"] == dataset]
            if mine:
                title = (
                    f"IMP on {dataset}, {spec.net.label}, {spec.imp.scope} pruning "
                    f"{spec.imp.rate:g}/level, rewind={spec.imp.rewind}, {mine[0]['n']} seeds"
                )
                paths.append(plot_lottery(mine, out_dir / f"lottery_{dataset}.png", title))
        return paths
