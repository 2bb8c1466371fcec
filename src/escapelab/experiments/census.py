"""E5, the census of critical points: how many distinct bad minima, how large their basins, and
which Hessian indices the non-global critical points near them have.

Per width m the students of ``width-sweep`` are trained and classified; then the task gathers
critical points from three sources:

* ``endpoint`` — training endpoints that are critical points (bad minima and saddles);
* ``embedded`` — every bad minimum split into width m + 1 at each unit (gamma = 1/2), the
  symmetry-induced critical points of Fukumizu & Amari (2000) and Simsek et al. (2021);
* ``search``   — critical points reached by gradient-norm minimisation
  (:func:`escapelab.optim.refine.find_critical_points`) from random perturbations of size
  ``search_radius`` around each non-global endpoint.

The summary groups bad minima into distinct minima by their output on Gaussian probe inputs
(:func:`escapelab.landscape.symmetry.group_minima`, which sees through permutations and sign
flips) and reports their losses and basin shares (fraction of seeds), next to the distribution of
the Hessian index of the critical points found.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from escapelab.config import constraint
from escapelab.experiments.base import Task
from escapelab.experiments.kits.census import (
    critical_record,
    endpoint_records,
    group_bad_minima,
    search_around,
)
from escapelab.experiments.kits.teacher_student import (
    StudentSpec,
    TeacherStudentSpec,
    objective_for,
    per_teacher,
    task_spec,
    train_students,
    width_tasks,
)
from escapelab.nets.surgery import split_unit


@dataclass(frozen=True)
class CensusSpec(TeacherStudentSpec):
    """Widths to survey, and how hard to look for saddles around what training found."""

    student: StudentSpec = field(default_factory=lambda: StudentSpec(widths=(3, 4, 5), seeds=24))
    search_starts: int = field(default=2, metadata=constraint(ge=0, help="per endpoint"))
    search_radius: float = field(default=0.3, metadata=constraint(gt=0))
    search_steps: int = field(default=100, metadata=constraint(ge=1))
    tol_function: float = field(default=1e-4, metadata=constraint(gt=0))
    n_probes: int = field(default=512, metadata=constraint(ge=1))
    seed: int = 0


class Census:
    """The ``minima-census`` experiment (E5)."""

    name = "minima-census"
    spec_type = CensusSpec
    description = "distinct bad minima, their basins, and the Hessian index of critical points"

    def tasks(self, spec: CensusSpec) -> list[Task]:
        return width_tasks(spec)

    def run_task(self, spec: CensusSpec, task: Task, device: torch.device) -> list[dict[str, Any]]:
        m, lo, hi = task.params["m"], task.params["lo"], task.params["hi"]
        spec = task_spec(spec, task)
        tr = spec.train
        run = train_students(spec, m, lo, hi, device)
        arch, objective, result, endpoints = run.arch, run.objective, run.result, run.endpoints
        objective = objective.to(result.theta.dtype)
        records = endpoint_records(run, m, lo)
        critical = [i for i, ep in enumerate(endpoints) if ep.kind in ("local_min", "saddle")]
        for i in critical:
            eigs = torch.linalg.eigvalsh(objective.hessian(result.theta[i : i + 1]))[0]
            records.append(
                critical_record(
                    "endpoint",
                    m,
                    m,
                    lo + i,
                    endpoints[i].loss,
                    endpoints[i].grad_norm,
                    eigs,
                    tr.tol_eig,
                )
            )
        bad = [i for i in critical if endpoints[i].kind == "local_min"]
        if bad:
            split = [(i, split_unit(arch, result.theta[i], j, 0.5)) for i in bad for j in range(m)]
            wide = split[0][1][0]
            wide_obj = objective_for(spec, wide, device).to(result.theta.dtype)
            points = torch.stack([p for _, (_, p) in split])
            loss, grad = wide_obj.loss_and_grad(points)
            eigs = torch.linalg.eigvalsh(wide_obj.hessian(points))
            for k, (i, _) in enumerate(split):
                records.append(
                    critical_record(
                        "embedded",
                        m + 1,
                        m,
                        lo + i,
                        float(loss[k]),
                        float(grad[k].norm()),
                        eigs[k],
                        tr.tol_eig,
                    )
                )
        records += search_around(spec, objective, result.theta, critical, lo, m, "census")
        return [{"teacher": spec.teacher.seed, **r} for r in records]

    def summarize(self, spec: CensusSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per teacher and width: :meth:`summarize_teacher`."""
        return per_teacher(spec, records, self.summarize_teacher)

    def summarize_teacher(
        self, spec: CensusSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Per width: distinct bad minima (losses, basin shares) and Hessian indices found."""
        rows = []
        for m in sorted({int(r["width"]) for r in records if r["role"] == "endpoint"}):
            ends = [r for r in records if r["role"] == "endpoint" and r["width"] == m]
            bad = [r for r in ends if r["kind"] == "local_min"]
            groups = group_bad_minima(spec, m, bad, spec.tol_function, spec.n_probes, spec.seed)
            found = [
                r
                for r in records
                if r["role"] == "critical"
                and r["source_width"] == m
                and r["loss"] >= spec.train.tol_global
            ]
            index = Counter(r["index"] for r in found)
            rows.append(
                {
                    "width": m,
                    "seeds": len(ends),
                    "global_min": sum(r["kind"] == "global_min" for r in ends),
                    "bad_minima": len(bad),
                    # endpoints that are neither: out of budget, flat channels, saddles
                    "not_converged": sum(r["kind"] == "not_converged" for r in ends),
                    "other_endpoints": sum(
                        r["kind"] in ("saddle", "flat_channel", "diverged") for r in ends
                    ),
                    "distinct_bad_minima": len(groups),
                    "minima_losses": [g.mean_loss for g in groups],
                    "basin_shares": [g.basin_share * len(bad) / len(ends) for g in groups],
                    "critical_points_found": len(found),
                    "index_counts": {str(k): index[k] for k in sorted(index)},
                }
            )
        return rows

    def figures(self, spec: CensusSpec, records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
        from escapelab.report.figures import plot_index_distribution, plot_minima_basins

        rows = self.summarize(spec, records)
        found = [
            r for r in records if r["role"] == "critical" and r["loss"] >= spec.train.tol_global
        ]
        title = f"teacher r*={spec.teacher.width}, d={spec.teacher.d}"
        return [
            plot_minima_basins(rows, out_dir / "distinct_bad_minima.png", title),
            plot_index_distribution(found, out_dir / "hessian_index.png", title),
        ]
