"""Rarity of bad minima (issue 16): over many teachers and the widths r* - 1 ... r* + 3, how many
distinct bad minima there are modulo symmetry, how much of the basin they hold, how many distinct
pieces of the global-minimum manifold the students reach, and the Hessian index of critical
points against the parameter count.

Per teacher and width m the students of the teacher-student kit are trained and classified
(the census kit, :mod:`escapelab.experiments.kits.census`, shared with ``minima-census``):

* bad minima are grouped modulo permutations and sign flips in function space
  (:func:`escapelab.landscape.symmetry.group_minima`); their total basin share is the fraction
  of students ending in one, with a Wilson 95 % interval;
* every global minimum is labelled, from its stored weights, by the piece of the global-minimum
  manifold it lies on, modulo the student's permutations
  (:func:`escapelab.landscape.rarity.global_piece`: copies of each teacher unit, cancelling
  groups; weights matched within ``tol_piece`` of the teacher's largest entry: at losses of
  1e-13 copies with small output weights still sit a few per cent off the teacher's unit, along
  the flat valleys of the manifold); the distinct labels reached are set against the
  possible labels (:func:`~escapelab.landscape.rarity.piece_orbits`) and against T(r*, m) and
  the sum over r < r* of G(r, m) (:mod:`escapelab.theory.symmetry_counts`);
* critical points are searched (gradient-norm minimisation) from ``search_starts`` random
  perturbations of size ``search_radius`` around every endpoint; the Hessian index of the
  non-global ones, and separately that of the non-global critical endpoints of training, is
  tabulated against the parameter count P, and log P(index = 0) is fitted linear in P
  (:func:`~escapelab.landscape.rarity.fit_index_decay`, interval by bootstrap over teachers).

The two samples answer different questions: training endpoints are what gradient descent finds
from random starts (mostly minima); search points are critical points near those endpoints
(mostly saddles). Neither is a uniform sample of all critical points.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from escapelab.config import constraint
from escapelab.experiments.base import Task
from escapelab.experiments.kits.census import endpoint_records, group_bad_minima, search_around
from escapelab.experiments.kits.teacher_student import (
    StudentSpec,
    TeacherStudentSpec,
    build_teacher,
    for_teacher,
    record_teacher,
    student_arch,
    task_spec,
    train_students,
    width_tasks,
)
from escapelab.landscape.rarity import UNRESOLVED, fit_index_decay, global_piece, piece_orbits
from escapelab.seeding import derive_seed
from escapelab.theory.multistart import wilson_interval
from escapelab.theory.symmetry_counts import count_global_subspaces, count_saddle_subspaces

_TEACHERS = TeacherStudentSpec.__dataclass_fields__["teachers"].metadata


@dataclass(frozen=True)
class RaritySpec(TeacherStudentSpec):
    """Widths r* - 1 ... r* + 3 over many teachers, and how hard to look for critical points."""

    student: StudentSpec = field(
        default_factory=lambda: StudentSpec(widths=(3, 4, 5, 6, 7), seeds=24)
    )
    teachers: int = field(default=12, metadata=_TEACHERS)
    search_starts: int = field(default=2, metadata=constraint(ge=0, help="per student"))
    search_radius: float = field(default=0.5, metadata=constraint(gt=0))
    search_steps: int = field(default=100, metadata=constraint(ge=1))
    tol_function: float = field(default=1e-4, metadata=constraint(gt=0))
    tol_piece: float = field(
        default=0.05, metadata=constraint(gt=0, help="relative match of weights to the teacher's")
    )
    n_probes: int = field(default=512, metadata=constraint(ge=1))
    bootstrap: int = field(default=1000, metadata=constraint(ge=0, help="resamples of teachers"))
    seed: int = 0


class MinimaRarity:
    """The ``minima-rarity`` experiment (issue 16, item 2)."""

    name = "minima-rarity"
    spec_type = RaritySpec
    description = "how rare bad minima are: distinct minima and pieces, basins, index vs P"

    def tasks(self, spec: RaritySpec) -> list[Task]:
        return width_tasks(spec)

    def run_task(self, spec: RaritySpec, task: Task, device: torch.device) -> list[dict[str, Any]]:
        m, lo, hi = task.params["m"], task.params["lo"], task.params["hi"]
        spec = task_spec(spec, task)
        run = train_students(spec, m, lo, hi, device)
        records = endpoint_records(run, m, lo)
        for rec in records:
            rec["n_params"] = run.arch.n_params
        theta = run.result.theta
        objective = run.objective.to(theta.dtype)
        records += search_around(
            spec, objective, theta, list(range(hi - lo)), lo, m, "rarity-search"
        )
        return [{"teacher": spec.teacher.seed, **r} for r in records]

    def summarize(self, spec: RaritySpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of four roles: ``teacher`` (per teacher and width), ``width`` (pooled over
        teachers, with the counts T and G), ``index`` (per source and width) and ``fit`` (the
        index-decay fit per source: ``search``, ``endpoint``, and ``search_wide``, the search
        points at widths m >= r* alone, where the narrowest width's bad minima are left out)."""
        r_star = spec.teacher.width
        widths = sorted({int(r["width"]) for r in records if r["role"] == "endpoint"})
        teachers = sorted({record_teacher(spec, r) for r in records})
        per_teacher = []
        for seed in teachers:
            one = for_teacher(spec, seed - spec.teacher.seed)
            teacher = build_teacher(one.teacher)
            mine = [r for r in records if record_teacher(spec, r) == seed]
            for m in widths:
                ends = [r for r in mine if r["role"] == "endpoint" and r["width"] == m]
                bad = [r for r in ends if r["kind"] == "local_min"]
                groups = group_bad_minima(one, m, bad, spec.tol_function, spec.n_probes, spec.seed)
                arch = student_arch(one.teacher, m, one.student.bias)
                pieces = Counter(
                    global_piece(
                        arch,
                        torch.tensor(r["theta"], dtype=torch.float64),
                        teacher.arch,
                        teacher.theta,
                        spec.tol_piece,
                    )
                    for r in ends
                    if r["kind"] == "global_min"
                )
                resolved = {p: n for p, n in pieces.items() if not p.startswith(UNRESOLVED)}
                per_teacher.append(
                    {
                        "role": "teacher",
                        "teacher": seed,
                        "width": m,
                        "seeds": len(ends),
                        "global_min": sum(pieces.values()),
                        "bad_minima": len(bad),
                        "distinct_bad_minima": len(groups),
                        "basin_shares": [len(g.members) / len(ends) for g in groups],
                        "distinct_global_pieces": len(resolved),
                        "unresolved_global": sum(pieces.values()) - sum(resolved.values()),
                        "pieces": dict(sorted(resolved.items())),
                    }
                )
        rows = [
            self._pooled(r_star, m, [r for r in per_teacher if r["width"] == m]) for m in widths
        ]
        rows += per_teacher
        for source in ("search", "endpoint", "search_wide"):
            rows += self._index_rows(spec, records, source)
        return rows

    @staticmethod
    def _pooled(r_star: int, m: int, mine: list[dict[str, Any]]) -> dict[str, Any]:
        """One width pooled over teachers."""
        seeds = sum(r["seeds"] for r in mine)
        bad = sum(r["bad_minima"] for r in mine)
        lo, hi = wilson_interval(bad, seeds)
        distinct_bad = sum(r["distinct_bad_minima"] for r in mine)
        distinct_good = sum(r["distinct_global_pieces"] for r in mine)
        labels = {p for r in mine for p in r["pieces"]}
        return {
            "role": "width",
            "teacher": "pooled",
            "width": m,
            "teachers": len(mine),
            "seeds": seeds,
            "global_min": sum(r["global_min"] for r in mine),
            "bad_minima": bad,
            "p_bad_min": bad / seeds if seeds else float("nan"),
            "bad_ci_low": lo,
            "bad_ci_high": hi,
            "distinct_bad_minima": distinct_bad,
            "teachers_with_bad": sum(r["bad_minima"] > 0 for r in mine),
            "largest_bad_basin": max((s for r in mine for s in r["basin_shares"]), default=0.0),
            "distinct_global_pieces": distinct_good,
            "piece_labels": len(labels),
            "labels_outside_T": sum("silent" in p for p in labels),
            "unresolved_global": sum(r["unresolved_global"] for r in mine),
            "bad_good_ratio": distinct_bad / distinct_good if distinct_good else float("nan"),
            "piece_orbits": piece_orbits(r_star, m),
            "T": count_global_subspaces(r_star, m),
            "G": count_saddle_subspaces(r_star, m),
            "G_over_T": (
                count_saddle_subspaces(r_star, m) / count_global_subspaces(r_star, m)
                if m >= r_star
                else float("nan")
            ),
        }

    @staticmethod
    def _index_rows(
        spec: RaritySpec, records: list[dict[str, Any]], source: str
    ) -> list[dict[str, Any]]:
        """Index distribution per width of the non-global critical points of one source, and
        the fit of log P(index = 0) against the parameter count."""
        if source in ("search", "search_wide"):
            least = spec.teacher.width if source == "search_wide" else 0
            points = [
                (record_teacher(spec, r), int(r["width"]), int(r["n_params"]), int(r["index"]))
                for r in records
                if r["role"] == "critical"
                and r["loss"] >= spec.train.tol_global
                and r["width"] >= least
            ]
        else:
            points = [
                (record_teacher(spec, r), int(r["width"]), int(r["n_params"]), int(r["n_negative"]))
                for r in records
                if r["role"] == "endpoint" and r["kind"] in ("local_min", "saddle")
            ]
        rows = []
        for m in sorted({p[1] for p in points}) if source != "search_wide" else []:
            mine = [p for p in points if p[1] == m]
            zero = sum(p[3] == 0 for p in mine)
            lo, hi = wilson_interval(zero, len(mine))
            index = Counter(p[3] for p in mine)
            rows.append(
                {
                    "role": "index",
                    "source": source,
                    "width": m,
                    "n_params": mine[0][2],
                    "found": len(mine),
                    "index_zero": zero,
                    "p_index_zero": zero / len(mine),
                    "ci_low": lo,
                    "ci_high": hi,
                    "mean_index": sum(p[3] for p in mine) / len(mine),
                    "index_counts": {str(k): index[k] for k in sorted(index)},
                }
            )
        groups = Counter((p[0], p[2]) for p in points)
        zeros = Counter((p[0], p[2]) for p in points if p[3] == 0)
        fit = fit_index_decay(
            [(t, n_params, n, zeros[(t, n_params)]) for (t, n_params), n in groups.items()],
            spec.bootstrap,
            derive_seed("rarity-bootstrap", spec.seed),
        )
        rows.append(
            {
                "role": "fit",
                "source": source,
                "slope": fit.slope,
                "slope_low": fit.slope_low,
                "slope_high": fit.slope_high,
                "intercept": fit.intercept,
                "deviance": fit.deviance,
                "df": fit.df,
                "gof_p": fit.gof_p,
                "points": fit.points,
                "index_zero": fit.index_zero,
                "n_params": list(fit.n_params),
                "verdict": fit.verdict,
            }
        )
        return rows

    def figures(self, spec: RaritySpec, records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
        from escapelab.report.rarity_figures import plot_rarity

        return plot_rarity(self.summarize(spec, records), spec.teacher.width, out_dir)
