"""E1 (success probability vs width) with the multi-start predictions of E2.

Students of several widths m learn a teacher of width r*; every student (one seed = one ensemble
member) is trained to a true endpoint and classified exactly. Per width the summary gives the
class counts, P(global minimum) with a Wilson 95 % interval, and the literal-lottery predictions
P(m) = 1 - (1 - p)^K(m) from the p measured at m = r* (see :mod:`escapelab.theory.multistart`).
A task is one width and one block of seeds; member i's initial weights depend only on the student
seed, the width and i, so results do not depend on how seeds are split into tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from escapelab.experiments.base import Task
from escapelab.experiments.kits.teacher_student import (
    TeacherStudentSpec,
    train_students,
    width_tasks,
)
from escapelab.landscape.classify import CLASSES
from escapelab.theory.multistart import multistart_prediction, wilson_interval


@dataclass(frozen=True)
class WidthSweepSpec(TeacherStudentSpec):
    """The width sweep: the shared teacher-student sections and nothing more."""


class WidthSweep:
    """The ``width-sweep`` experiment (E1 + the formula part of E2)."""

    name = "width-sweep"
    spec_type = WidthSweepSpec
    description = "success probability vs student width, with the multi-start predictions"

    def tasks(self, spec: WidthSweepSpec) -> list[Task]:
        return width_tasks(spec)

    def run_task(
        self, spec: WidthSweepSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        m, lo, hi = task.params["m"], task.params["lo"], task.params["hi"]
        run = train_students(spec, m, lo, hi, device)
        result, endpoints = run.result, run.endpoints
        share = result.wall_time / max(1, hi - lo)
        kinks = run.kink_angles()
        records = [
            {
                "width": m,
                "member": lo + i,
                **ep.to_dict(),
                "wall_time": share,
                "theta": result.theta[i].tolist(),
            }
            for i, ep in enumerate(endpoints)
        ]
        if kinks is not None:  # relu on the population loss: how close to a kink each ended
            for record, angle in zip(records, kinks.tolist(), strict=True):
                record["kink_angle"] = angle
        return records

    def summarize(
        self, spec: WidthSweepSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """One row per width: counts by class, P(global) with its Wilson interval, P(bad local
        minimum) with its own, the share that ran out of budget (``not_converged``: neither
        a success nor a failure of the landscape), and the predictions."""
        r_star = spec.teacher.width
        rows = []
        for m in sorted({int(r["width"]) for r in records}):
            mine = [r for r in records if r["width"] == m]
            counts = {c: sum(r["kind"] == c for r in mine) for c in CLASSES}
            n, k, bad = len(mine), counts["global_min"], counts["local_min"]
            lo, hi = wilson_interval(k, n)
            bad_lo, bad_hi = wilson_interval(bad, n)
            rows.append(
                {
                    "width": m,
                    "n": n,
                    "p_global": k / n,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_bad_min": bad / n,
                    "bad_ci_low": bad_lo,
                    "bad_ci_high": bad_hi,
                    "p_not_converged": counts["not_converged"] / n,
                    **counts,
                }
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
