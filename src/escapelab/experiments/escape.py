"""E4, escape dimensions directly: embed bad minima of width r into width r + 1 and train on.

Width-r students (the same members as in ``width-sweep``) are trained to their endpoints; every bad
local minimum among them is embedded into width r + 1

* by splitting each unit j with every gamma of the grid (Fukumizu & Amari 2000), where the
  splitting matrix B of :mod:`escapelab.landscape.splitting` predicts minimum or saddle, and
* by adding a unit with zero outgoing weight and random incoming weights.

The embedded point keeps the loss (and, when split, the zero gradient); its exact Hessian gives the
escape dimensions (negative eigenvalues). It is then perturbed — along random unit directions and
along the most negative eigenvector, with size epsilon — and trained on. Records: one ``source``
record per width-r member and one ``embedded`` record per perturbed run with the B eigenvalues and
class, the prediction, the embedded point's loss, gradient and spectrum, the final class and loss,
whether it escaped (final loss below the bad minimum's) and its loss curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from escapelab.config import constraint
from escapelab.experiments.base import Task
from escapelab.experiments.kits.teacher_student import (
    StudentSpec,
    TeacherStudentSpec,
    objective_for,
    per_teacher,
    task_spec,
    train_and_classify,
    train_students,
    width_tasks,
)
from escapelab.landscape.splitting import classify_b, predicts_saddle, splitting_matrix
from escapelab.nets.surgery import add_unit, split_unit
from escapelab.seeding import derive_seed
from escapelab.theory.multistart import wilson_interval

ESCAPE_MARGIN = 1e-6  # an escape lowers the loss by more than this fraction of the bad minimum's


@dataclass(frozen=True)
class EscapeSpec(TeacherStudentSpec):
    """Bad minima of the widths in ``student.widths`` embedded one unit wider, then trained."""

    student: StudentSpec = field(default_factory=lambda: StudentSpec(widths=(4,), seeds=24))
    gammas: tuple[float, ...] = (-0.5, 0.25, 0.5, 0.75, 1.5)
    epsilon: float = field(default=1e-3, metadata=constraint(gt=0))
    n_random: int = field(default=2, metadata=constraint(ge=0))
    max_minima: int = field(default=4, metadata=constraint(ge=1, help="bad minima per task"))
    new_unit_scale: float = field(default=1.0, metadata=constraint(gt=0))
    perturb_seed: int = 0


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


class Escape:
    """The ``escape`` experiment (E4)."""

    name = "escape"
    spec_type = EscapeSpec
    description = "bad minima embedded one unit wider: saddles (escape dimensions) and escapes"

    def tasks(self, spec: EscapeSpec) -> list[Task]:
        return width_tasks(spec, label="r")

    def run_task(self, spec: EscapeSpec, task: Task, device: torch.device) -> list[dict[str, Any]]:
        r, lo, hi = task.params["m"], task.params["lo"], task.params["hi"]
        spec = task_spec(spec, task)
        run = train_students(spec, r, lo, hi, device)
        arch, objective, result, endpoints = run.arch, run.objective, run.result, run.endpoints
        records: list[dict[str, Any]] = [
            {
                "teacher": spec.teacher.seed,
                "role": "source",
                "width": r,
                "member": lo + i,
                **ep.to_dict(),
            }
            for i, ep in enumerate(endpoints)
        ]
        bad = [i for i, ep in enumerate(endpoints) if ep.kind == "local_min"][: spec.max_minima]
        starts, meta = [], []
        wide = None
        objective = objective.to(result.theta.dtype)
        for i in bad:
            theta = result.theta[i]
            embedded = []
            for j in range(r):
                b_eigs = torch.linalg.eigvalsh(splitting_matrix(objective, theta, j))
                b_class = classify_b(b_eigs)
                for gamma in spec.gammas:
                    wide, point = split_unit(arch, theta, j, gamma)
                    embedded.append(
                        (
                            point,
                            {
                                "embedding": "split",
                                "unit": j,
                                "gamma": gamma,
                                "b_eigenvalues": b_eigs.tolist(),
                                "b_class": b_class,
                                "predicted_saddle": predicts_saddle(b_class, gamma),
                            },
                        )
                    )
            gen = torch.Generator().manual_seed(derive_seed("new-unit", spec.perturb_seed, lo + i))
            w_new = torch.randn(arch.d_in, generator=gen, dtype=torch.float64)
            wide, point = add_unit(arch, theta, w_new * spec.new_unit_scale / math.sqrt(arch.d_in))
            embedded.append(
                (
                    point,
                    {
                        "embedding": "add",
                        "unit": None,
                        "gamma": None,
                        "b_eigenvalues": None,
                        "b_class": None,
                        "predicted_saddle": None,
                    },
                )
            )
            for point, info in embedded:
                starts.append(point)
                meta.append({"member": lo + i, "source_loss": endpoints[i].loss, **info})
        if not starts or wide is None:
            return records
        wide_obj = objective_for(spec, wide, device).to(result.theta.dtype)
        points = torch.stack(starts)
        loss0, grad0 = wide_obj.loss_and_grad(points)
        eigs, vecs = torch.linalg.eigh(wide_obj.hessian(points))
        tol = spec.train.tol_eig * eigs[:, -1].abs()
        runs, run_meta = [], []
        for k, info in enumerate(meta):
            info.update(
                embedded_loss=float(loss0[k]),
                embedded_grad_norm=float(grad0[k].norm()),
                embedded_eig_min=float(eigs[k, 0]),
                embedded_eig_max=float(eigs[k, -1]),
                embedded_n_negative=int((eigs[k] < -tol[k]).sum()),
            )
            gen = torch.Generator().manual_seed(
                derive_seed("perturb", spec.perturb_seed, k, info["member"])
            )
            directions = [
                (
                    "random",
                    _unit(torch.randn(points.shape[1], generator=gen, dtype=torch.float64)).to(
                        points
                    ),
                )
                for _ in range(spec.n_random)
            ]
            if info["embedded_n_negative"] > 0:
                directions.append(("negative_eigenvector", vecs[k, :, 0]))
            for kind, direction in directions:
                runs.append(points[k] + spec.epsilon * direction)
                run_meta.append({**info, "perturbation": kind})
        final, final_ep = train_and_classify(wide_obj, torch.stack(runs).to(points), spec.train)
        steps = final.history_step
        for k, (info, ep) in enumerate(zip(run_meta, final_ep, strict=True)):
            curve = final.history_loss[k].tolist() if final.history_loss is not None else []
            records.append(
                {
                    "teacher": spec.teacher.seed,
                    "role": "embedded",
                    "width": r + 1,
                    **info,
                    **ep.to_dict(),
                    "escaped": ep.loss < info["source_loss"] * (1 - ESCAPE_MARGIN),
                    "reached_global": ep.kind == "global_min",
                    "curve_steps": steps,
                    "loss_curve": curve,
                }
            )
        return records

    def summarize(self, spec: EscapeSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per teacher, source width, embedding and gamma: :func:`escape_table`."""
        return per_teacher(spec, records, lambda _, mine: escape_table(mine))

    def figures(self, spec: EscapeSpec, records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
        from escapelab.report.figures import plot_escape_curves, plot_split_spectrum

        runs = [x for x in records if x["role"] == "embedded"]
        if not runs:
            return []
        title = f"bad minima of width {sorted(set(spec.student.widths))} embedded one unit wider"
        return [
            plot_split_spectrum(runs, out_dir / "split_eig_min_vs_gamma.png", title),
            plot_escape_curves(runs, out_dir / "escape_loss_curves.png", title),
        ]


def escape_table(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per source width, embedding and gamma: saddles (predicted, measured), escape rate."""
    rows = []
    for r in sorted({int(x["width"]) for x in records if x["role"] == "source"}):
        sources = [x for x in records if x["role"] == "source" and x["width"] == r]
        bad = sum(x["kind"] == "local_min" for x in sources)
        # sources out of budget: minima (bad or not) that were never reached, so never tested
        budget = sum(x["kind"] == "not_converged" for x in sources)
        runs = [x for x in records if x["role"] == "embedded" and x["width"] == r + 1]
        keys = sorted(
            {(x["embedding"], x["gamma"]) for x in runs},
            key=lambda k: (k[0], -1e9 if k[1] is None else k[1]),
        )
        if not runs:
            rows.append(
                {
                    "source_width": r,
                    "sources": len(sources),
                    "bad_minima": bad,
                    "sources_not_converged": budget,
                    "embedding": "-",
                    "gamma": None,
                    "runs": 0,
                }
            )
        for emb, gamma in keys:
            mine = [x for x in runs if x["embedding"] == emb and x["gamma"] == gamma]
            saddle = [x["embedded_n_negative"] > 0 for x in mine]
            predicted = [x["predicted_saddle"] for x in mine]
            judged = [(p, s) for p, s in zip(predicted, saddle, strict=True) if p is not None]
            escaped = sum(x["escaped"] for x in mine)
            lo, hi = wilson_interval(escaped, len(mine))
            rows.append(
                {
                    "source_width": r,
                    "sources": len(sources),
                    "bad_minima": bad,
                    "sources_not_converged": budget,
                    "embedding": emb,
                    "gamma": gamma,
                    "runs": len(mine),
                    "saddle_measured": sum(saddle) / len(mine),
                    "b_agrees": (sum(p == s for p, s in judged) / len(judged))
                    if judged
                    else float("nan"),
                    "escape_rate": escaped / len(mine),
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_global": sum(x["reached_global"] for x in mine) / len(mine),
                    "mean_final_loss": sum(x["loss"] for x in mine) / len(mine),
                }
            )
    return rows
