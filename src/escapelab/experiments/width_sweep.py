"""E1 (success probability vs width) with the multi-start predictions of E2.

Students of several widths m learn a teacher of width r*; every student (one seed = one ensemble
member) is trained to a true endpoint and classified exactly. Per width the summary gives the
class counts, P(global minimum) with a Wilson 95 % interval, and the literal-lottery predictions
P(m) = 1 - (1 - p)^K(m) from the p measured at m = r* (see :mod:`escapelab.theory.multistart`).
A task is one width and one block of seeds; member i's initial weights depend only on the student
seed, the width and i, so results do not depend on how seeds are split into tasks.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from escapelab.experiments.base import Task
from escapelab.experiments.kits.teacher_student import (
    TeacherStudentSpec,
    per_teacher,
    task_spec,
    train_students,
    width_tasks,
)
from escapelab.landscape.classify import CLASSES
from escapelab.theory.multistart import (
    bootstrap_mean_interval,
    multistart_prediction,
    wilson_interval,
)


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
        spec = task_spec(spec, task)
        run = train_students(spec, m, lo, hi, device)
        result, endpoints = run.result, run.endpoints
        share = result.wall_time / max(1, hi - lo)
        kinks = run.kink_angles()
        records = [
            {
                "teacher": spec.teacher.seed,
                "width": m,
                "member": lo + i,
                **ep.to_dict(),
                "wall_time": share,
                **result.seconds_per_member(),
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
        """Per teacher and width (:meth:`summarize_teacher`); with several teachers, also one
        ``pooled`` row per width (:func:`pooled_rows`)."""
        rows = per_teacher(spec, records, self.summarize_teacher)
        return rows + pooled_rows(rows) if "teacher" in (rows[0] if rows else {}) else rows

    def summarize_teacher(
        self, spec: WidthSweepSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """One teacher's rows, one per width: counts by class, P(global) with its Wilson
        interval, P(bad local minimum) with its own, the share that ran out of budget
        (``not_converged``: neither a success nor a failure of the landscape), and the
        multi-start predictions from this teacher's P(global) at m = r*."""
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

    def figures_title(self, spec: WidthSweepSpec) -> str:
        """The figures' title: the teacher(s) and the loss."""
        teachers = f"{spec.teachers} teachers" if spec.teachers > 1 else "teacher"
        return (
            f"{teachers} r*={spec.teacher.width}, d={spec.teacher.d}, {spec.teacher.activation}, "
            + ("population loss" if spec.n_samples is None else f"N={spec.n_samples}")
        )

    def figures(
        self, spec: WidthSweepSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.figures import plot_loss_by_width, plot_success_vs_width

        rows = self.summarize(spec, records)
        title = self.figures_title(spec)
        return [
            plot_success_vs_width(
                rows, spec.teacher.width, out_dir / "p_global_vs_width.png", title
            ),
            plot_loss_by_width(
                records, out_dir / "final_loss_by_width.png", title, spec.train.tol_global
            ),
        ]


def pooled_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``pooled`` row per width over the per-teacher rows: the mean over teachers of
    P(global) with a bootstrap interval over teachers (which carries the between-teacher
    spread, unlike a binomial interval of all members together), its smallest and largest
    teacher value, P(bad local minimum) likewise, the class counts and the share out of budget
    over all members, and the mean of the teachers' own multi-start predictions."""
    out = []
    for m in sorted({r["width"] for r in rows}):
        mine = [r for r in rows if r["width"] == m]
        n = sum(r["n"] for r in mine)
        counts = {c: sum(r[c] for r in mine) for c in CLASSES}
        p, bad = [r["p_global"] for r in mine], [r["p_bad_min"] for r in mine]
        lo, hi = bootstrap_mean_interval(p)
        bad_lo, bad_hi = bootstrap_mean_interval(bad)
        out.append(
            {
                "teacher": "pooled",
                "width": m,
                "n": n,
                "teachers": len(mine),
                "p_global": statistics.fmean(p),
                "ci_low": lo,
                "ci_high": hi,
                "p_global_min": min(p),
                "p_global_max": max(p),
                "p_bad_min": statistics.fmean(bad),
                "bad_ci_low": bad_lo,
                "bad_ci_high": bad_hi,
                "p_not_converged": counts["not_converged"] / n,
                **counts,
                "pred_subsets": statistics.fmean(r["pred_subsets"] for r in mine),
                "pred_disjoint": statistics.fmean(r["pred_disjoint"] for r in mine),
            }
        )
    return out
