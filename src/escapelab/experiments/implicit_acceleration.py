"""Implicit acceleration by depth (Arora, Cohen & Hazan, ICML 2018, "On the optimization of deep
networks: implicit acceleration by overparameterization").

Linear regression with the l_p loss (:mod:`escapelab.problems.lp_regression`) is solved by a
depth-1 model w and by depth-2 and depth-3 linear networks w = W_N ... W_1 (hidden width
``hidden``) that start from the same small end-to-end vector with near-balanced factors
(:func:`escapelab.theory.end_to_end.balanced_factors` plus relative noise ``imbalance``). The
depth-1 model is also trained by GD with momentum and with Nesterov momentum, AdaGrad, AdaDelta
and Adam (``torch.optim``). Every method runs at every learning rate of ``lrs``; its best rate is
the one with the fewest iterations (median over seeds) to a relative excess loss
(L - L*) / (L_0 - L*) below ``eps``. The paper's finding: for p = 4 depth accelerates gradient
descent (and beats AdaGrad and AdaDelta), for p = 2 it brings nothing.

The paper's end-to-end update rule (depth acts as the preconditioner
|w|^(2-2/N) (I + (N-1) u u^T), :func:`escapelab.theory.end_to_end.end_to_end_preconditioned`)
is checked on the trained factors: at every step the end-to-end vector's actual move is compared
with the rule's, and ``rule_dev`` is sum_t |actual - rule| / sum_t |rule| over the run.

One task trains one (data set, p, method): all learning rates and seeds at once, each learning
rate a parameter group whose tensors stack the seeds (every update is per seed: the loss is the
sum of the members' losses and the optimizers act elementwise or per group).
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
from escapelab.problems.lp_regression import LpProblem, lp_grad, lp_loss, lp_problem
from escapelab.seeding import derive_seed
from escapelab.theory.end_to_end import balanced_factors, end_to_end, end_to_end_preconditioned

Method = Literal["gd", "momentum", "nesterov", "adagrad", "adadelta", "adam", "depth2", "depth3"]
METHODS: tuple[str, ...] = (
    "gd",
    "momentum",
    "nesterov",
    "adagrad",
    "adadelta",
    "adam",
    "depth2",
    "depth3",
)
DEPTH = {"depth2": 2, "depth3": 3}
CHECKPOINTS = 60  # loss-curve points kept per run (log-spaced steps)


@dataclass(frozen=True)
class SyntheticLpSpec:
    """The synthetic regression task: x ~ N(0, C), C's eigenvalues log-spaced from 1 to
    1/condition in a random basis, y = x . w_true + noise * N(0, 1)."""

    samples: int = field(default=500, metadata=constraint(ge=2))
    dim: int = field(default=20, metadata=constraint(ge=1))
    noise: float = field(default=0.5, metadata=constraint(ge=0))
    condition: float = field(
        default=100.0, metadata=constraint(ge=1, help="condition number of the input covariance")
    )


@dataclass(frozen=True)
class ImplicitAccelerationSpec:
    """Data sets x exponents p x methods x learning rates x seeds."""

    datasets: tuple[Literal["synthetic", "diabetes"], ...] = ("synthetic", "diabetes")
    ps: tuple[float, ...] = field(
        default=(2.0, 4.0), metadata=constraint(ge=2, le=8, unordered=True, help="loss exponents")
    )
    methods: tuple[Method, ...] = METHODS
    lrs: tuple[float, ...] = field(
        default=tuple(float(f"{v:.3g}") for v in np.geomspace(1e-3, 10.0, 33)),
        metadata=constraint(gt=0, unordered=True, help="learning-rate grid of every method"),
    )
    steps: int = field(default=1000, metadata=constraint(ge=1, le=1_000_000))
    eps: float = field(
        default=1e-3, metadata=constraint(gt=0, lt=1, help="target relative excess loss")
    )
    init_norm: float = field(
        default=0.1, metadata=constraint(gt=0, help="|w_0| of the end-to-end start")
    )
    hidden: int = field(default=10, metadata=constraint(ge=1, help="hidden width of depth-N nets"))
    imbalance: float = field(
        default=1e-3, metadata=constraint(ge=0, help="relative noise on the balanced factors")
    )
    momentum: float = field(default=0.9, metadata=constraint(ge=0, lt=1))
    synthetic: SyntheticLpSpec = field(default_factory=SyntheticLpSpec)
    seeds: int = field(default=6, metadata=constraint(ge=1))
    seed: int = 0
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: all seeds")
    )

    def __post_init__(self) -> None:
        for name in ("datasets", "methods"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise SpecError(name, f"name at least one, each at most once, got {values}")


def _checkpoints(steps: int) -> list[int]:
    return sorted({0, *(round(float(v)) for v in np.geomspace(1, steps, CHECKPOINTS))})


def _initial_vectors(spec: ImplicitAccelerationSpec, dataset: str, lo: int, hi: int, d: int):
    """w_0 per seed: a random direction of norm ``init_norm`` (the same for every method)."""
    out = []
    for i in range(lo, hi):
        gen = torch.Generator().manual_seed(derive_seed("ia-w0", spec.seed, dataset, i))
        v = torch.randn(d, generator=gen, dtype=torch.float64)
        out.append(spec.init_norm * v / torch.linalg.vector_norm(v))
    return torch.stack(out)


def _initial_factors(
    spec: ImplicitAccelerationSpec, dataset: str, lo: int, w0: Tensor, depth: int
) -> list[Tensor]:
    """Near-balanced factors per seed: exactly balanced with product w_0, then each entry
    perturbed by ``imbalance`` times the factor scale |w_0|^(1/N)."""
    per_seed = []
    for s in range(w0.shape[0]):
        gen = torch.Generator().manual_seed(derive_seed("ia-factors", spec.seed, dataset, lo + s))
        factors = balanced_factors(w0[s : s + 1], depth, spec.hidden, gen)
        scale = float(torch.linalg.vector_norm(w0[s])) ** (1 / depth)
        per_seed.append(
            [
                f + spec.imbalance * scale * torch.randn(f.shape, generator=gen, dtype=f.dtype)
                for f in factors
            ]
        )
    return [torch.cat([fs[j] for fs in per_seed]) for j in range(depth)]


def _optimizer(method: str, groups: list[dict[str, Any]], momentum: float):
    if method in ("gd", *DEPTH):
        return torch.optim.SGD(groups, lr=1.0)
    if method in ("momentum", "nesterov"):
        return torch.optim.SGD(groups, lr=1.0, momentum=momentum, nesterov=method == "nesterov")
    if method == "adagrad":
        return torch.optim.Adagrad(groups, lr=1.0)
    if method == "adadelta":
        return torch.optim.Adadelta(groups, lr=1.0)
    return torch.optim.Adam(groups, lr=1.0)


def train_method(
    problem: LpProblem,
    method: str,
    lrs: list[float],
    w0: Tensor,
    factors: list[Tensor] | None,
    steps: int,
    eps: float,
    momentum: float = 0.9,
) -> dict[str, Tensor]:
    """Train ``method`` at every learning rate from w_0 (or from ``factors`` for depth-N) on the
    stacked problems; tensors of shape (L, S) (curves (L, S, checkpoints)).

    Returns ``loss0``, ``final`` (relative excess loss at the end), ``iters`` (first step with
    relative excess <= eps, -1 if never), ``diverged``, ``curve`` (relative excess at the
    checkpoints) and for depth-N ``rule_dev`` (the end-to-end rule's aggregate deviation)."""
    depth = DEPTH.get(method, 1)
    blocks = [w0.unsqueeze(-2)] if factors is None else factors  # depth 1: (S, 1, d)
    params = [[b.clone().requires_grad_(True) for b in blocks] for _ in lrs]
    opt = _optimizer(
        method, [{"params": p, "lr": lr} for p, lr in zip(params, lrs, strict=True)], momentum
    )
    lr_t = torch.tensor(lrs, dtype=torch.float64)[:, None, None]

    def forward() -> Tensor:
        return end_to_end([torch.stack([p[j] for p in params]) for j in range(len(blocks))])

    marks = _checkpoints(steps)
    with torch.no_grad():
        w = forward()
        loss0 = lp_loss(problem.x, problem.y, w, problem.p)
    gap0 = (loss0 - problem.loss_opt).clamp_min(1e-300)
    iters = torch.full(loss0.shape, -1, dtype=torch.long)
    alive = torch.ones(loss0.shape, dtype=torch.bool)
    curve = torch.zeros(*loss0.shape, len(marks), dtype=torch.float64)
    dev_num = torch.zeros(loss0.shape, dtype=torch.float64)
    dev_den = torch.zeros(loss0.shape, dtype=torch.float64)
    limit = 1e12 * loss0.clamp_min(1.0)
    mark = 0
    for t in range(steps + 1):
        opt.zero_grad(set_to_none=True)
        w = forward()
        losses = lp_loss(problem.x, problem.y, w, problem.p)
        with torch.no_grad():
            rel = (losses - problem.loss_opt) / gap0
            alive &= torch.isfinite(losses) & (losses < limit)
            rel = torch.where(alive, rel, torch.full_like(rel, math.inf))
            iters = torch.where((iters < 0) & (rel <= eps), t, iters)
            if mark < len(marks) and t == marks[mark]:
                curve[..., mark] = rel
                mark += 1
        if t == steps:
            break
        torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
        w_before = w.detach()
        opt.step()
        if depth > 1:
            with torch.no_grad():
                rule = -lr_t * end_to_end_preconditioned(
                    w_before, lp_grad(problem.x, problem.y, w_before, problem.p), depth
                )
                moved = forward() - w_before
                gap = torch.linalg.vector_norm(moved - rule, dim=-1)
                size = torch.linalg.vector_norm(rule, dim=-1)
                ok = alive & torch.isfinite(gap)
                dev_num += torch.where(ok, gap, 0.0)
                dev_den += torch.where(ok, size, 0.0)
    out = {
        "loss0": loss0,
        "final": rel,
        "iters": iters,
        "diverged": ~alive,
        "curve": curve,
    }
    if depth > 1:
        out["rule_dev"] = dev_num / dev_den.clamp_min(1e-300)
    return out


def run_group(
    spec: ImplicitAccelerationSpec, dataset: str, p: float, method: str, lo: int, hi: int
) -> list[dict[str, Any]]:
    """Records of seeds lo..hi-1 of one (data set, p, method): one per learning rate and seed."""
    s = spec.synthetic
    problem = lp_problem(
        dataset,
        p,
        [derive_seed("ia", spec.seed, i) for i in range(lo, hi)],
        s.samples,
        s.dim,
        s.noise,
        s.condition,
    )
    w0 = _initial_vectors(spec, dataset, lo, hi, problem.x.shape[-1])
    depth = DEPTH.get(method, 1)
    factors = _initial_factors(spec, dataset, lo, w0, depth) if depth > 1 else None
    lrs = sorted(spec.lrs)
    result = train_method(problem, method, lrs, w0, factors, spec.steps, spec.eps, spec.momentum)
    records = []
    for a, lr in enumerate(lrs):
        for j in range(hi - lo):
            it = int(result["iters"][a, j])
            record = {
                "dataset": dataset,
                "p": p,
                "method": method,
                "depth": depth,
                "lr": lr,
                "member": lo + j,
                "loss_opt": float(problem.loss_opt[j]),
                "loss0": float(result["loss0"][a, j]),
                "final_excess": float(result["final"][a, j]),
                "iters": it if it >= 0 else None,
                "diverged": bool(result["diverged"][a, j]),
                "curve": [float(v) for v in result["curve"][a, j]],
            }
            if "rule_dev" in result:
                record["rule_dev"] = float(result["rule_dev"][a, j])
            records.append(record)
    return records


def _censored(r: dict[str, Any], steps: int) -> float:
    return r["iters"] if r["iters"] is not None else steps + 1


def best_rows(spec: ImplicitAccelerationSpec, records: list[dict[str, Any]]) -> list[dict]:
    """Per (data set, p, method): the best learning rate (fewest median iterations to ``eps``,
    ties by median final excess) and, there, the iterations over seeds (median, range, share
    reaching ``eps``), the median final excess, and for depth-N the rule's deviation (median
    over seeds at the best and at the smallest learning rate)."""
    rows = []
    keys = dict.fromkeys((r["dataset"], r["p"], r["method"]) for r in records)
    for dataset, p, method in keys:
        mine = [r for r in records if (r["dataset"], r["p"], r["method"]) == (dataset, p, method)]
        by_lr: dict[float, list[dict]] = {}
        for r in mine:
            by_lr.setdefault(r["lr"], []).append(r)

        def score(lr: float, by_lr=by_lr) -> tuple[float, float]:
            runs = by_lr[lr]
            finals = [r["final_excess"] for r in runs]
            return (
                statistics.median(_censored(r, spec.steps) for r in runs),
                statistics.median(f if math.isfinite(f) else math.inf for f in finals),
            )

        best = min(by_lr, key=score)
        runs = by_lr[best]
        its = [_censored(r, spec.steps) for r in runs]
        row = {
            "kind": "best",
            "dataset": dataset,
            "p": p,
            "method": method,
            "best_lr": best,
            "seeds": len(runs),
            "iters_median": statistics.median(its),
            "iters_min": min(its),
            "iters_max": max(its),
            "reached": sum(r["iters"] is not None for r in runs),
            "final_excess_median": statistics.median(r["final_excess"] for r in runs),
            "diverged_lrs": sum(all(r["diverged"] for r in v) for v in by_lr.values()),
        }
        if "rule_dev" in runs[0]:
            smallest = by_lr[min(by_lr)]
            row["rule_dev_best"] = statistics.median(r["rule_dev"] for r in runs)
            row["rule_dev_smallest_lr"] = statistics.median(r["rule_dev"] for r in smallest)
        rows.append(row)
    return rows


def _iters_text(row: dict[str, Any], steps: int) -> str:
    med = row["iters_median"]
    text = f"> {steps}" if med > steps else f"{med:g}"
    return f"{text} (seeds {row['iters_min']:g}-{row['iters_max']:g}, lr {row['best_lr']:g})"


def claim_rows(spec: ImplicitAccelerationSpec, rows: list[dict[str, Any]]) -> list[dict]:
    """The paper's claims per data set: depth accelerates l4 regression, brings no gain for l2,
    beats AdaGrad and AdaDelta at l4; the end-to-end rule matches the trained factors."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for p in sorted({r["p"] for r in rows if r["dataset"] == dataset}):
            at = {r["method"]: r for r in rows if r["dataset"] == dataset and r["p"] == p}
            deep = [at[m] for m in DEPTH if m in at]
            if not deep or "gd" not in at:
                continue
            best_deep = min(deep, key=lambda r: r["iters_median"])
            speedup = at["gd"]["iters_median"] / best_deep["iters_median"]
            base = {"kind": "claim", "dataset": dataset, "p": p}
            detail = (
                f"iterations to relative excess {spec.eps:g}: "
                f"GD {_iters_text(at['gd'], spec.steps)}, "
                f"{best_deep['method']} {_iters_text(best_deep, spec.steps)}"
            )
            if p >= 3:
                claim, holds = f"depth accelerates GD (l{p:g} loss)", speedup > 1.0
            else:
                claim, holds = f"depth brings no gain over GD (l{p:g} loss)", speedup <= 1.25
            out.append(
                {**base, "claim": claim, "measured": speedup, "holds": holds, "detail": detail}
            )
            if p >= 3:
                for rival in ("adagrad", "adadelta", "adam", "momentum", "nesterov"):
                    if rival in at:
                        ratio = at[rival]["iters_median"] / best_deep["iters_median"]
                        out.append(
                            {
                                **base,
                                "claim": f"depth beats {rival} (l{p:g} loss)",
                                "measured": ratio,
                                "holds": ratio > 1.0,
                                "detail": f"{rival} {_iters_text(at[rival], spec.steps)}; "
                                f"{best_deep['method']} {_iters_text(best_deep, spec.steps)}",
                            }
                        )
            worst = max(r["rule_dev_smallest_lr"] for r in deep)
            out.append(
                {
                    **base,
                    "claim": f"end-to-end update rule matches the factors (l{p:g} loss)",
                    "measured": worst,
                    "holds": worst < 0.05,
                    "detail": "median relative deviation of the end-to-end move from the rule at "
                    f"the smallest learning rate {min(spec.lrs):g}: "
                    + ", ".join(f"{r['method']} {r['rule_dev_smallest_lr']:.2e}" for r in deep)
                    + "; at the best rate: "
                    + ", ".join(f"{r['method']} {r['rule_dev_best']:.2e}" for r in deep),
                }
            )
    return out


class ImplicitAcceleration:
    """The ``implicit-acceleration`` experiment (depth as a preconditioner for l_p regression)."""

    name = "implicit-acceleration"
    spec_type = ImplicitAccelerationSpec
    description = "implicit acceleration by depth: l2 vs l4 regression, depth-N vs adaptive GD"

    def tasks(self, spec: ImplicitAccelerationSpec) -> list[Task]:
        groups = [
            (f"data={d}/p={p:g}/method={m}", {"dataset": d, "p": p, "method": m})
            for d in spec.datasets
            for p in spec.ps
            for m in spec.methods
        ]
        return seed_tasks(groups, spec.seeds, spec.seeds_per_task)

    def run_task(
        self, spec: ImplicitAccelerationSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        q = task.params
        return run_group(spec, q["dataset"], q["p"], q["method"], q["lo"], q["hi"])

    def summarize(
        self, spec: ImplicitAccelerationSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        rows = best_rows(spec, records)
        return rows + claim_rows(spec, rows)

    def figures(
        self, spec: ImplicitAccelerationSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.zoo_dynamics_figures import plot_acceleration

        rows = best_rows(spec, records)
        paths = []
        for dataset in dict.fromkeys(r["dataset"] for r in records):
            title = (
                f"l_p regression on {dataset}: median relative excess loss at each method's best "
                f"learning rate ({rows[0]['seeds']} seeds)"
            )
            path = out_dir / f"implicit_acceleration_{dataset}.png"
            mine = [r for r in records if r["dataset"] == dataset]
            paths.append(
                plot_acceleration(mine, rows, _checkpoints(spec.steps), spec.eps, path, title)
            )
        return paths
