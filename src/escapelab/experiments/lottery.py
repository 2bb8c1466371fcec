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
from typing import Any

import torch

from escapelab.config import SpecError, constraint
from escapelab.experiments.base import Task, seed_tasks
from escapelab.experiments.kits.classifier import (
    ClassifierSpec,
    DataSpec,
    load_task_data,
    stacked_classifier,
)
from escapelab.optim.minibatch import FitConfig
from escapelab.seeding import derive_seed
from escapelab.tickets.imp import ROLES, IMPConfig, check_rewind_step, run_imp


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
        check_rewind_step(self.imp, self.fit)


def network_seeds(spec: LotterySpec, dataset: str, lo: int, hi: int) -> list[int]:
    """Initialization seeds of networks lo..hi-1 on ``dataset``."""
    return [derive_seed("lottery", spec.seed, dataset, i) for i in range(lo, hi)]


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
        groups = [(f"data={name}", {"dataset": name}) for name in spec.data.datasets]
        return seed_tasks(groups, spec.seeds, spec.seeds_per_task)

    def run_task(self, spec: LotterySpec, task: Task, device: torch.device) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        name, lo, hi = task.params["dataset"], task.params["lo"], task.params["hi"]
        data = load_task_data(spec.data, name, device)
        model = stacked_classifier(spec.net, data, device)
        seeds = network_seeds(spec, name, lo, hi)
        member = {s: lo + i for i, s in enumerate(seeds)}
        with tqdm(
            total=spec.imp.levels + 1, desc=f"IMP {name}", unit="level", leave=False, disable=None
        ) as bar:
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
            {(r["dataset"], r["prune_level"], r["role"]) for r in records},
            key=lambda k: (spec.data.datasets.index(k[0]), k[1], ROLES.index(k[2])),
        )
        for dataset, level, role in keys:
            mine = [
                r
                for r in records
                if r["dataset"] == dataset and r["prune_level"] == level and r["role"] == role
            ]
            row: dict[str, Any] = {
                "dataset": dataset,
                "prune_level": level,
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
