"""The ReLU literature's setting: how often plain gradient descent ends at a spurious minimum.

Safran & Shamir (2018), "Spurious local minima are common in two-layer ReLU neural networks"
(ICML; arXiv 1712.08968), study x -> sum_i relu(w_i . x) with the output weights fixed to one,
on standard Gaussian inputs, against a teacher of k orthonormal ReLU units in d = k dimensions.
They train n = k students from Xavier initializations with plain gradient descent on the exact
population loss and report that the share of runs ending at a spurious (non-global) local
minimum grows with k from about k = 6 on, and that a little overparameterization (n = k + 1,
k + 2) makes such endings much rarer.

This experiment is that setting, named and fixed: the teacher of ``k`` orthonormal ReLU units
with output weights one (``make_teacher(..., incoming="orthonormal", outgoing="ones")``); the
students' output weights held at one (the trainer's ``free`` mask: only the incoming weights
train); Glorot ("Xavier") initialization; gradient descent with the fixed step
``step_scale / k`` until the gradient norm is ``handoff_grad``; the exact population loss
through the arc-cosine kernel (:mod:`escapelab.problems.population`). Where the paper stops on
a small gradient norm, every member here is driven on to a certified endpoint
(:mod:`escapelab.optim.full_batch`) and classified from its exact Hessian
(:mod:`escapelab.landscape.classify`); a spurious minimum is a ``local_min``.

The ReLU population loss is twice differentiable except where two incoming vectors (of the
student or the teacher) are collinear or one is zero. Every record keeps ``kink_angle``, the
smallest angle to such a point, so an endpoint that sits on a kink (every global minimum does:
its units are the teacher's) is reported, not guessed about.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from escapelab.config import constraint
from escapelab.experiments.base import Task, seed_tasks
from escapelab.landscape.classify import CLASSES, ClassifyConfig, classify
from escapelab.nets.mlp import Architecture
from escapelab.optim.full_batch import TrainConfig, train
from escapelab.problems.population import PopulationObjective
from escapelab.problems.teacher import make_teacher
from escapelab.seeding import derive_seed
from escapelab.theory.multistart import wilson_interval

KINK_ANGLE = 1e-6
"""An endpoint whose ``kink_angle`` is below this (radians) counts as sitting on a kink."""


@dataclass(frozen=True)
class ReluSpuriousSpec:
    """The Safran-Shamir setting: teachers of ``ks`` units in d = k, students of n = k + e
    units for e in ``extra``, ``inits`` initializations each."""

    ks: tuple[int, ...] = field(
        default=(6, 7, 8, 9, 10),
        metadata=constraint(ge=1, unordered=True, help="teacher widths k (= input dimension d)"),
    )
    extra: tuple[int, ...] = field(
        default=(0, 1, 2),
        metadata=constraint(ge=0, unordered=True, help="student width n = k + extra"),
    )
    inits: int = field(default=500, metadata=constraint(ge=1, help="initializations per (k, n)"))
    step_scale: float = field(
        default=5.0, metadata=constraint(gt=0, help="gradient descent step = step_scale / k")
    )
    steps: int = field(default=20000, metadata=constraint(ge=0, help="gradient descent steps"))
    tol_grad: float = field(
        default=1e-10, metadata=constraint(gt=0, help="gradient norm of a critical point")
    )
    handoff_grad: float = field(
        default=1e-4,
        metadata=constraint(ge=0, help="gradient norm that ends gradient descent for a member"),
    )
    tol_cert: float = field(
        default=1e-9,
        metadata=constraint(gt=0, help="gradient infinity norm of a certified endpoint"),
    )
    refine_steps: int = field(default=60, metadata=constraint(ge=0))
    certify_rounds: int = field(default=2, metadata=constraint(ge=0))
    tol_global: float = field(default=1e-9, metadata=constraint(gt=0))
    tol_eig: float = field(
        default=1e-6, metadata=constraint(ge=0, help="relative to the largest Hessian eigenvalue")
    )
    teacher_seed: int = 0
    seed: int = 0
    inits_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: one task per (k, n)")
    )

    def train_config(self, k: int) -> TrainConfig:
        """Plain gradient descent with the step ``step_scale / k`` until the gradient norm is
        ``handoff_grad`` (the paper's stopping rule), then the Newton refinement and
        certification take each member to its exact endpoint.

        Why ``handoff_grad`` 1e-4 and not smaller: with n > k the global minima are degenerate
        and gradient descent converges slowly near them, where Newton's method needs a few
        iterations; a member handed over at a saddle is not lost, the certification rounds
        continue gradient descent. Why ``tol_cert`` 1e-9 and not the library's 1e-12: at the
        spurious minima some student units coincide with teacher units, where the arc-cosine
        kernel's derivative divides by sin(angle), and Newton's iteration stalls at gradient
        infinity norms of 1e-11 to 1.2e-9 (measured at k = 9, 10) while the Hessian is clearly
        positive definite (smallest eigenvalue 0.03): with gradient g and smallest eigenvalue
        lambda, the minimum lies within |g| / lambda ~ 4e-8 of the endpoint.
        """
        return TrainConfig(
            optimizer="gd",
            lr=self.step_scale / k,
            steps=self.steps,
            refine_steps=self.refine_steps,
            tol_grad=self.tol_grad,
            handoff_grad=self.handoff_grad,
            tol_global=self.tol_global,
            certify_rounds=self.certify_rounds,
            tol_cert=self.tol_cert,
            record_every=max(1, self.steps // 50),
        )


def setting(
    spec: ReluSpuriousSpec, k: int, n: int, device: torch.device | str = "cpu"
) -> tuple[PopulationObjective, Architecture]:
    """The exact population loss of n-unit students (output weights one) against the teacher
    of k orthonormal units in d = k, and the students' architecture."""
    teacher = make_teacher(k, k, "relu", "orthonormal", "ones", False, spec.teacher_seed, 1.0)
    arch = Architecture(k, (n,), 1, "relu", bias=False, output_bias=False)
    return PopulationObjective(arch, teacher.arch, teacher.theta.to(device)), arch


def frozen_output_start(
    spec: ReluSpuriousSpec, arch: Architecture, lo: int, hi: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Members lo..hi-1: Glorot incoming weights, output weights one; and the ``free`` mask
    (True on the incoming weights only). Member i depends on (seed, k, n, i) alone."""
    k, n = arch.d_in, arch.widths[0]
    theta = arch.init(hi - lo, derive_seed("relu-spurious", spec.seed, k, n), first_member=lo)
    free = torch.ones_like(theta, dtype=torch.bool)
    theta[:, k * n :] = 1.0
    free[:, k * n :] = False
    return theta, free


class ReluSpurious:
    """The ``relu-spurious`` experiment (the Safran-Shamir setting)."""

    name = "relu-spurious"
    spec_type = ReluSpuriousSpec
    description = "share of gradient-descent runs ending at spurious minima (Safran-Shamir ReLU)"

    def tasks(self, spec: ReluSpuriousSpec) -> list[Task]:
        groups = [
            (f"k={k:02d}/n={k + e:02d}", {"k": k, "n": k + e})
            for k in sorted(set(spec.ks))
            for e in sorted(set(spec.extra))
        ]
        return seed_tasks(groups, spec.inits, spec.inits_per_task)

    def run_task(
        self, spec: ReluSpuriousSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        k, n, lo, hi = (int(task.params[key]) for key in ("k", "n", "lo", "hi"))
        objective, arch = setting(spec, k, n, device)
        theta0, free = frozen_output_start(spec, arch, lo, hi)
        result = train(objective, theta0.to(device), spec.train_config(k), free=free.to(device))
        start = time.perf_counter()
        endpoints = classify(
            objective, result, ClassifyConfig(tol_global=spec.tol_global, tol_eig=spec.tol_eig)
        )
        result.phase_seconds["classify"] = time.perf_counter() - start
        kinks = objective.min_incoming_angle(result.theta).tolist()
        share = result.wall_time / max(1, hi - lo)
        return [
            {
                "k": k,
                "n": n,
                "member": lo + i,
                **ep.to_dict(),
                "kink_angle": kinks[i],
                "wall_time": share,
                **result.seconds_per_member(),
                "theta": result.theta[i, : k * n].tolist(),
            }
            for i, ep in enumerate(endpoints)
        ]

    def summarize(
        self, spec: ReluSpuriousSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """One row per (k, n): counts by class, the share of spurious minima and of global
        minima with Wilson 95 % intervals, the share out of budget, how many endpoints sit on
        a kink, the spurious minima's distinct loss levels, and the wall time."""
        rows = []
        for k, n in sorted({(int(r["k"]), int(r["n"])) for r in records}):
            mine = [r for r in records if r["k"] == k and r["n"] == n]
            total = len(mine)
            counts = {c: sum(r["kind"] == c for r in mine) for c in CLASSES}
            bad_lo, bad_hi = wilson_interval(counts["local_min"], total)
            lo, hi = wilson_interval(counts["global_min"], total)
            levels = sorted({round(r["loss"], 4) for r in mine if r["kind"] == "local_min"})
            rows.append(
                {
                    "k": k,
                    "n": n,
                    "inits": total,
                    "p_spurious": counts["local_min"] / total,
                    "spurious_ci_low": bad_lo,
                    "spurious_ci_high": bad_hi,
                    "p_global": counts["global_min"] / total,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_not_converged": counts["not_converged"] / total,
                    **counts,
                    "on_kink": sum(r["kink_angle"] < KINK_ANGLE for r in mine),
                    "spurious_losses": " ".join(f"{v:g}" for v in levels),
                    "wall_time": sum(r["wall_time"] for r in mine),
                }
            )
        return rows

    def figures(
        self, spec: ReluSpuriousSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.figures import plot_spurious_vs_k

        title = (
            f"ReLU, orthonormal teacher in d = k, output weights 1, GD step "
            f"{spec.step_scale:g}/k, population loss"
        )
        rows = self.summarize(spec, records)
        return [plot_spurious_vs_k(rows, out_dir / "spurious_vs_k.png", title)]
