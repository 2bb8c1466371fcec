"""Overparameterized low-rank matrix sensing: GD against ScaledGD(lambda) (Xu, Shen, Chi & Ma,
ICML 2023, "The power of preconditioning in overparameterized low-rank matrix sensing") and
PrecGD (Zhang, Fattahi & Zhang, JMLR 2023, "Preconditioned gradient descent for
overparameterized nonconvex Burer-Monteiro factorization with global optimality certification").

A rank-r* truth of size n x n with condition number kappa is measured by ``measurements``
Gaussian sensing matrices (:mod:`escapelab.problems.matrix_sensing`); a factor X (n x r, r >= r*)
starts from the small random X_0 = ``init_scale`` * G / sqrt(n) and follows

* GD:              X <- X - eta grad f(X)                                (eta = ``gd_step`` / s_1)
* ScaledGD(lambda): X <- X - eta grad f(X) (X^T X + lambda I)^-1          (lambda = ``damping`` s_1)
* PrecGD:          X <- X - eta grad f(X) (X^T X + eta_t I)^-1, eta_t = sqrt(2 f(X))

(s_1: the truth's largest singular value, so lambda needs no knowledge of the conditioning;
the papers' claim: GD needs a
number of iterations polynomial in kappa, ScaledGD(lambda) logarithmic, and PrecGD converges
linearly whatever r > r*). A run's time is the first iteration with relative error
|X X^T - M*|_F / |M*|_F <= ``eps``. At the end, the duality-gap bound of
:func:`~escapelab.problems.matrix_sensing.optimality_gap_bound` (with tr(M*) as the trace bound)
says how far from globally optimal the point is certified to be; a run is ``certified`` when
that bound is at most ``eps`` |M*|_F^2 (the bound is first order in the error, the loss second).

Two sweeps: kappa over ``kappas`` at r = ``rank``, and r over ``ranks`` at kappa =
``kappa_fixed``. One task is one (kappa, r) point: every method and seed, seeds batched.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from escapelab.config import SpecError, constraint
from escapelab.experiments.base import Task, seed_tasks
from escapelab.problems.matrix_sensing import (
    SensingProblem,
    loss_and_dual,
    optimality_gap_bound,
    relative_error,
    sensing_problem,
)
from escapelab.seeding import derive_seed
from escapelab.theory.multistart import wilson_interval

METHODS = ("gd", "scaledgd", "precgd")


@dataclass(frozen=True)
class MatrixSensingSpec:
    """Sizes, the two sweeps, the three methods' steps, seeds."""

    n: int = field(default=20, metadata=constraint(ge=2, help="matrix size"))
    r_star: int = field(default=2, metadata=constraint(ge=1, help="rank of the truth"))
    measurements: int = field(default=1200, metadata=constraint(ge=1))
    kappas: tuple[float, ...] = field(
        default=(1.0, 10.0, 100.0, 1000.0),
        metadata=constraint(ge=1, unordered=True, help="condition numbers of the kappa sweep"),
    )
    rank: int = field(default=4, metadata=constraint(ge=1, help="search rank r of the kappa sweep"))
    ranks: tuple[int, ...] = field(
        default=(2, 3, 4, 6, 8),
        metadata=constraint(ge=1, unordered=True, help="search ranks of the r sweep"),
    )
    kappa_fixed: float = field(default=10.0, metadata=constraint(ge=1))
    methods: tuple[Literal["gd", "scaledgd", "precgd"], ...] = METHODS
    gd_step: float = field(default=0.2, metadata=constraint(gt=0, help="eta * s_1 of GD"))
    scaled_step: float = field(default=0.2, metadata=constraint(gt=0))
    damping: float = field(
        default=1e-3, metadata=constraint(gt=0, help="ScaledGD's lambda in units of s_1")
    )
    prec_step: float = field(default=0.2, metadata=constraint(gt=0))
    init_scale: float = field(default=1e-3, metadata=constraint(gt=0))
    eps: float = field(default=1e-4, metadata=constraint(gt=0, lt=1))
    max_iters: int = field(default=30000, metadata=constraint(ge=1, le=1_000_000))
    record_every: int = field(default=10, metadata=constraint(ge=1))
    seeds: int = field(default=6, metadata=constraint(ge=1))
    seed: int = 0
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: all seeds")
    )

    def __post_init__(self) -> None:
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise SpecError("methods", f"name at least one, each at most once, got {self.methods}")
        for name, values in (("rank", (self.rank,)), ("ranks", self.ranks)):
            if min(values) < self.r_star:
                raise SpecError(
                    name, f"search ranks must be >= r_star = {self.r_star}, got {min(values)}"
                )
            if max(values) > self.n:
                raise SpecError(name, f"search ranks must be <= n = {self.n}, got {max(values)}")


def points(spec: MatrixSensingSpec) -> list[tuple[float, int]]:
    """The (kappa, r) points of both sweeps, each once."""
    pts = [(k, spec.rank) for k in spec.kappas] + [(spec.kappa_fixed, r) for r in spec.ranks]
    return list(dict.fromkeys(pts))


def make_problem(spec: MatrixSensingSpec, kappa: float, lo: int, hi: int) -> SensingProblem:
    """The problems of seeds lo..hi-1 at ``kappa`` (the same for every r and method)."""
    gens = [
        torch.Generator().manual_seed(derive_seed("ms", spec.seed, kappa, i)) for i in range(lo, hi)
    ]
    return sensing_problem(spec.n, spec.r_star, kappa, spec.measurements, gens)


def initial_factors(spec: MatrixSensingSpec, kappa: float, r: int, lo: int, hi: int) -> Tensor:
    """X_0 = init_scale * G / sqrt(n) per seed, the same for every method."""
    out = []
    for i in range(lo, hi):
        gen = torch.Generator().manual_seed(derive_seed("ms-init", spec.seed, kappa, r, i))
        out.append(torch.randn(spec.n, r, generator=gen, dtype=torch.float64))
    return spec.init_scale * torch.stack(out) / math.sqrt(spec.n)


def step(
    method: str, problem: SensingProblem, x: Tensor, spec: MatrixSensingSpec
) -> tuple[Tensor, Tensor]:
    """(X_next, f(X)) of one iteration of ``method`` for every problem."""
    f, s = loss_and_dual(problem, x)
    grad = 2 * s @ x
    if method == "gd":
        return x - spec.gd_step / problem.sigma[:, :1, None] * grad, f
    if method == "scaledgd":
        damp, eta = spec.damping * problem.sigma[:, 0], spec.scaled_step
    else:
        damp, eta = (2 * f).sqrt(), spec.prec_step
    eye = torch.eye(x.shape[-1], dtype=x.dtype)
    precond = x.mT @ x + damp[:, None, None] * eye
    return x - eta * torch.linalg.solve(precond, grad.mT).mT, f


def solve(
    spec: MatrixSensingSpec, problem: SensingProblem, x0: Tensor, method: str
) -> dict[str, Any]:
    """Run ``method`` until every seed reaches ``eps`` or ``max_iters``; each seed stops at its
    own first iterate at ``eps``, so its numbers do not depend on the seeds beside it. Per seed:
    that iteration (-1: never), the relative error at every ``record_every``-th iteration up to
    its stop (and at the stop), and the end point's numbers."""
    x = x0.clone()
    seeds = x.shape[0]
    iters = torch.full((seeds,), -1, dtype=torch.long)
    stop = torch.full((seeds,), spec.max_iters, dtype=torch.long)
    alive = torch.ones(seeds, dtype=torch.bool)
    errors: list[Tensor] = []
    t = 0
    while True:
        err = relative_error(problem, x)
        died = alive & ~(torch.isfinite(err) & (err < 1e6))
        alive &= ~died
        stop = torch.where(died, t, stop)
        reached = (iters < 0) & (err <= spec.eps) & alive
        iters = torch.where(reached, t, iters)
        stop = torch.where(reached, t, stop)
        errors.append(torch.where(alive, err, math.inf))
        if t == spec.max_iters or bool(((iters >= 0) | ~alive).all()):
            break
        x_next, _ = step(method, problem, x, spec)
        moving = alive & (iters < 0)  # a run stops at its own first iterate at eps
        x = torch.where(moving[:, None, None], x_next, x)
        t += 1
    history = torch.stack(errors, -1)
    curves = []
    for j in range(seeds):  # every record_every-th error up to the run's own stop, and the last
        end = int(stop[j])
        kept = list(range(0, end + 1, spec.record_every))
        curves.append(history[j, kept + ([end] if kept[-1] != end else [])].tolist())
    f, s = loss_and_dual(problem, x)
    trace = problem.m_star.diagonal(dim1=-2, dim2=-1).sum(-1)
    gap = optimality_gap_bound(x, s, trace)
    sv = torch.linalg.svdvals(x)
    r_star = problem.sigma.shape[-1]
    tail = sv[:, r_star] / sv[:, 0] if sv.shape[-1] > r_star else torch.zeros(seeds)
    return {
        "iters": iters,
        "final_error": err,
        "diverged": ~alive,
        "curve": curves,
        "loss": f,
        "gap_bound": gap,
        "lambda_min_s": torch.linalg.eigvalsh(s)[:, 0],
        "excess_rank_ratio": tail,
    }


def run_point(
    spec: MatrixSensingSpec, kappa: float, r: int, lo: int, hi: int
) -> list[dict[str, Any]]:
    """Records of seeds lo..hi-1 at (kappa, r): one per method and seed."""
    problem = make_problem(spec, kappa, lo, hi)
    x0 = initial_factors(spec, kappa, r, lo, hi)
    scale = torch.linalg.matrix_norm(problem.m_star).square()
    records = []
    for method in spec.methods:
        out = solve(spec, problem, x0, method)
        for j in range(hi - lo):
            it = int(out["iters"][j])
            records.append(
                {
                    "kappa": kappa,
                    "r": r,
                    "method": method,
                    "member": lo + j,
                    "iters": it if it >= 0 else None,
                    "final_error": float(out["final_error"][j]),
                    "diverged": bool(out["diverged"][j]),
                    "loss": float(out["loss"][j]),
                    "gap_bound": float(out["gap_bound"][j]),
                    "lambda_min_s": float(out["lambda_min_s"][j]),
                    "certified": bool(out["gap_bound"][j] <= spec.eps * scale[j]),
                    "excess_rank_ratio": float(out["excess_rank_ratio"][j]),
                    "curve": out["curve"][j],
                }
            )
    return records


def _censored(r: dict[str, Any], spec: MatrixSensingSpec) -> int:
    return r["iters"] if r["iters"] is not None else spec.max_iters + 1


def point_rows(spec: MatrixSensingSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (kappa, r, method): iterations to ``eps`` over seeds (median, range, share reaching
    it with its Wilson interval), median final error, certified runs."""
    rows = []
    for kappa, r, method in sorted({(x["kappa"], x["r"], x["method"]) for x in records}):
        at = [x for x in records if (x["kappa"], x["r"], x["method"]) == (kappa, r, method)]
        its = [_censored(x, spec) for x in at]
        reached = sum(x["iters"] is not None for x in at)
        lo, hi = wilson_interval(reached, len(at))
        rows.append(
            {
                "kind": "point",
                "kappa": kappa,
                "r": r,
                "method": method,
                "seeds": len(at),
                "iters_median": statistics.median(its),
                "iters_min": min(its),
                "iters_max": max(its),
                "reached": reached,
                "reached_ci_low": lo,
                "reached_ci_high": hi,
                "final_error_median": statistics.median(x["final_error"] for x in at),
                "certified": sum(x["certified"] for x in at),
                "gap_bound_median": statistics.median(x["gap_bound"] for x in at),
            }
        )
    return rows


def kappa_slope(rows: list[dict[str, Any]]) -> float:
    """Least-squares slope of log(median iterations) against log(kappa) (censored medians
    count at max_iters + 1, so the slope is then a lower bound); nan with fewer than 2 kappas."""
    pts = [(math.log(r["kappa"]), math.log(r["iters_median"])) for r in rows]
    if len({p[0] for p in pts}) < 2:
        return math.nan
    return float(np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)[0])


def claim_rows(spec: MatrixSensingSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """GD's iterations grow polynomially in kappa (slope > 0.5), ScaledGD(lambda)'s at most
    logarithmically (slope < 0.25); over-parameterization (r > r*) does not slow the
    preconditioned methods (r sweep: at most twice the iterations at r = r*); PrecGD's end
    points are certified globally optimal."""
    out = []
    k_rows = [r for r in rows if r["r"] == spec.rank]
    for method, claim, test in (
        ("gd", "GD's iterations grow polynomially in kappa", lambda s: s > 0.5),
        (
            "scaledgd",
            "ScaledGD(lambda)'s iterations grow at most logarithmically in kappa",
            lambda s: s < 0.25,
        ),
        ("precgd", "PrecGD's iterations grow at most logarithmically in kappa", lambda s: s < 0.25),
    ):
        mine = sorted((r for r in k_rows if r["method"] == method), key=lambda r: r["kappa"])
        slope = kappa_slope(mine)
        if math.isnan(slope):
            continue
        text = ", ".join(
            (
                f"> {spec.max_iters}"
                if r["iters_median"] > spec.max_iters
                else f"{r['iters_median']:g}"
            )
            + f" at kappa {r['kappa']:g}"
            for r in mine
        )
        out.append(
            {
                "kind": "claim",
                "claim": claim,
                "measured": slope,
                "holds": test(slope),
                "detail": f"median iterations to {spec.eps:g}: {text}; log-log slope {slope:.2f}",
            }
        )
    r_rows = [r for r in rows if r["kappa"] == spec.kappa_fixed]
    for method in ("scaledgd", "precgd", "gd"):
        mine = sorted((r for r in r_rows if r["method"] == method), key=lambda r: r["r"])
        base = next((r for r in mine if r["r"] == spec.r_star), None)
        if base is None or len(mine) < 2:
            continue
        worst = max(mine, key=lambda r: r["iters_median"])
        ratio = worst["iters_median"] / base["iters_median"]
        out.append(
            {
                "kind": "claim",
                "claim": f"over-parameterization (r > r*) does not slow {method}",
                "measured": ratio,
                "holds": ratio <= 2,
                "detail": f"kappa {spec.kappa_fixed:g}: median iterations "
                + ", ".join(f"{r['iters_median']:g} at r = {r['r']}" for r in mine),
            }
        )
    prec = [r for r in rows if r["method"] == "precgd"]
    if prec:
        n = sum(r["seeds"] for r in prec)
        k = sum(r["certified"] for r in prec)
        out.append(
            {
                "kind": "claim",
                "claim": "PrecGD's end points are certified globally optimal",
                "measured": k / n,
                "holds": k == n,
                "detail": f"{k} of {n} runs have a duality-gap bound <= eps |M*|_F^2",
            }
        )
    return out


class MatrixSensing:
    """The ``matrix-sensing`` experiment (GD vs ScaledGD(lambda) vs PrecGD)."""

    name = "matrix-sensing"
    spec_type = MatrixSensingSpec
    description = "overparameterized matrix sensing: GD vs ScaledGD(lambda) vs PrecGD in kappa, r"

    def tasks(self, spec: MatrixSensingSpec) -> list[Task]:
        groups = [(f"kappa={k:g}/r={r}", {"kappa": k, "r": r}) for k, r in points(spec)]
        return seed_tasks(groups, spec.seeds, spec.seeds_per_task)

    def run_task(
        self, spec: MatrixSensingSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        p = task.params
        return run_point(spec, p["kappa"], p["r"], p["lo"], p["hi"])

    def summarize(
        self, spec: MatrixSensingSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        rows = point_rows(spec, records)
        return rows + claim_rows(spec, rows)

    def figures(
        self, spec: MatrixSensingSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.zoo_dynamics_figures import plot_matrix_sensing

        rows = point_rows(spec, records)
        if not rows:
            return []
        title = (
            f"Matrix sensing, n = {spec.n}, r* = {spec.r_star}, {spec.measurements} measurements, "
            f"{rows[0]['seeds']} seeds: iterations to relative error {spec.eps:g}"
        )
        path = out_dir / "matrix_sensing.png"
        return [plot_matrix_sensing(records, rows, spec, path, title)]
