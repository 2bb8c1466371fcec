"""The catapult phase of large learning rates (Lewkowycz, Bahri, Dyer, Sohl-Dickstein &
Gur-Ari 2020, "The large learning rate phase of deep learning: the catapult mechanism").

A wide two-layer network (:mod:`escapelab.nets.wide_two_layer`, linear or ReLU, NTK
parameterisation) is trained by full-batch gradient descent on the half-MSE loss of a synthetic
regression task (x ~ N(0, I_d), y = x . beta with |beta| ~ 1) at learning rates eta = c /
lambda0 for every c in ``rates``, where lambda0 is the top eigenvalue at initialisation of the
NTK (closed form, batched) or of the loss Hessian (Lanczos, :func:`escapelab.landscape.curvature.
lanczos_eigs`), as ``curvature`` says; both are recorded. The paper's phases for the two-layer
linear model at large width: lazy for c < 2 (the loss falls, the curvature stays at lambda0),
catapult for 2 < c < 4 (the loss first grows, the curvature falls until it is below 2 / eta, then
the loss converges), divergence for c > 4; for ReLU networks the paper reports a larger maximal
rate, about 12 / lambda0.

Every run is classified from its loss and curvature trajectories (lambda_t: the top NTK
eigenvalue): ``divergent`` (the loss left finite numbers or grew beyond ``diverge_factor`` L_0),
``lazy`` (it ended below L_0, never rose above (1 + ``rise_tol``) L_0, and lambda_T stayed within
``curvature_tol`` of lambda_0), ``catapult`` (it ended below L_0 after rising above
(1 + ``rise_tol``) L_0 or with lambda_T below (1 - ``curvature_tol``) lambda_0: near eta * lambda0
= 2 the curvature falls before the loss visibly rises), ``stuck`` (none of these within
``steps``). One task trains every rate and seed of one
activation as one ensemble (members = seeds x rates, the same initial weights at every rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from escapelab.config import constraint
from escapelab.experiments.base import Task, seed_tasks
from escapelab.landscape.curvature import lanczos_eigs
from escapelab.nets.wide_two_layer import TwoLayer, forward, half_mse, top_ntk_eigenvalue
from escapelab.seeding import derive_seed
from escapelab.theory.multistart import wilson_interval

PHASES = ("lazy", "catapult", "divergent", "stuck")
DEFAULT_RATES = (
    *(0.5, 1.0, 1.5, 1.8, 2.2, 2.6, 3.0, 3.4, 3.8),
    *(4.2, 4.6, 5.0, 6.0, 8.0, 10.0, 12.0, 15.0),
)


@dataclass(frozen=True)
class CatapultSpec:
    """Activations x learning rates eta * lambda0 x seeds, on one synthetic data set."""

    activations: tuple[Literal["linear", "relu"], ...] = ("linear", "relu")
    width: int = field(default=512, metadata=constraint(ge=1, help="hidden units n"))
    samples: int = field(default=64, metadata=constraint(ge=1, help="training samples m"))
    dim: int = field(default=16, metadata=constraint(ge=1, help="input dimension d"))
    rates: tuple[float, ...] = field(
        default=DEFAULT_RATES,
        metadata=constraint(gt=0, le=1000, unordered=True, help="eta * lambda0 values"),
    )
    curvature: Literal["ntk", "hessian"] = "ntk"
    steps: int = field(default=300, metadata=constraint(ge=1, le=1_000_000))
    curvature_every: int = field(
        default=10, metadata=constraint(ge=1, help="steps between curvature measurements")
    )
    rise_tol: float = field(
        default=0.05,
        metadata=constraint(ge=0, help="relative rise of the loss that is no longer lazy"),
    )
    curvature_tol: float = field(
        default=0.05,
        metadata=constraint(ge=0, lt=1, help="relative fall of lambda that is no longer lazy"),
    )
    diverge_factor: float = field(default=1e8, metadata=constraint(gt=1))
    data_seed: int = 0
    seeds: int = field(default=8, metadata=constraint(ge=1))
    seed: int = 0
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: all seeds")
    )


def make_data(spec: CatapultSpec) -> tuple[Tensor, Tensor]:
    """x (m, d) ~ N(0, I), y = x . beta with beta ~ N(0, I / d), float64."""
    gen = torch.Generator().manual_seed(derive_seed("catapult-data", spec.data_seed))
    x = torch.randn(spec.samples, spec.dim, generator=gen, dtype=torch.float64)
    beta = torch.randn(spec.dim, generator=gen, dtype=torch.float64) / math.sqrt(spec.dim)
    return x, x @ beta


def init_weights(spec: CatapultSpec, activation: str, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """U (S, n, d), v (S, n) of seeds lo..hi-1, standard normal entries."""
    us, vs = [], []
    for i in range(lo, hi):
        gen = torch.Generator().manual_seed(derive_seed("catapult-init", spec.seed, activation, i))
        us.append(torch.randn(spec.width, spec.dim, generator=gen, dtype=torch.float64))
        vs.append(torch.randn(spec.width, generator=gen, dtype=torch.float64))
    return torch.stack(us), torch.stack(vs)


def hessian_top(u: Tensor, v: Tensor, x: Tensor, y: Tensor, activation: str) -> float:
    """The top Hessian eigenvalue of the half-MSE loss of one member (Lanczos)."""
    model = TwoLayer(u, v, activation)
    return float(
        lanczos_eigs(model, half_mse, (x, y), k=1, return_eigenvectors=False).eigenvalues[0]
    )


def classify(
    loss0: float,
    loss_max: float,
    loss_final: float,
    curvature_ratio: float,
    diverged: bool,
    rise_tol: float,
    curvature_tol: float,
) -> str:
    """The phase of one run (see the module docstring); ``curvature_ratio`` = lambda_T /
    lambda_0 of the NTK."""
    if diverged:
        return "divergent"
    if not loss_final < loss0:
        return "stuck"
    rose = loss_max > (1 + rise_tol) * loss0
    return "catapult" if rose or curvature_ratio < 1 - curvature_tol else "lazy"


def train_rates(spec: CatapultSpec, activation: str, lo: int, hi: int) -> list[dict[str, Any]]:
    """Records of seeds lo..hi-1 at every rate: phase, losses, curvatures, trajectories."""
    from tqdm.auto import tqdm

    x, y = make_data(spec)
    u0, v0 = init_weights(spec, activation, lo, hi)
    lam_ntk = top_ntk_eigenvalue(u0, v0, x, activation)
    lam_hess = torch.tensor(
        [hessian_top(u0[s], v0[s], x, y, activation) for s in range(hi - lo)], dtype=torch.float64
    )
    lam0 = lam_ntk if spec.curvature == "ntk" else lam_hess
    rates = sorted(spec.rates)
    seeds, n_rates = hi - lo, len(rates)
    # members: seed-major, rate-minor
    u = u0.repeat_interleave(n_rates, 0).clone().requires_grad_(True)
    v = v0.repeat_interleave(n_rates, 0).clone().requires_grad_(True)
    c = torch.tensor(rates, dtype=torch.float64).repeat(seeds)
    eta = c / lam0.repeat_interleave(n_rates)
    alive = torch.ones(len(eta), dtype=torch.bool)
    loss0 = loss_max = None
    loss_curve, lam_curve, marks = [], [], []
    for t in tqdm(range(spec.steps + 1), desc=f"catapult {activation}", leave=False):
        f = forward(u, v, x, activation)
        losses = 0.5 * (f - y).square().mean(-1)
        with torch.no_grad():
            if loss0 is None:
                loss0, loss_max = losses.detach().clone(), losses.detach().clone()
            alive &= torch.isfinite(losses) & (losses < spec.diverge_factor * loss0)
            loss_max = torch.where(alive, torch.maximum(loss_max, losses), loss_max)
            if t % spec.curvature_every == 0 or t == spec.steps:
                marks.append(t)
                loss_curve.append(torch.where(alive, losses, math.inf))
                lam = top_ntk_eigenvalue(
                    torch.where(alive[:, None, None], u, 0.0),
                    torch.where(alive[:, None], v, 0.0),
                    x,
                    activation,
                )
                lam_curve.append(torch.where(alive, lam, math.nan))
        if t == spec.steps:
            break
        gu, gv = torch.autograd.grad(torch.where(alive, losses, 0.0).sum(), (u, v))
        with torch.no_grad():
            step = torch.where(alive, eta, 0.0)
            u -= torch.nan_to_num(step[:, None, None] * gu)
            v -= torch.nan_to_num(step[:, None] * gv)
    loss_final, lam_final = loss_curve[-1], lam_curve[-1]
    records = []
    for k in range(len(eta)):
        s, a = divmod(k, n_rates)
        diverged = not bool(alive[k])
        phase = classify(
            float(loss0[k]),
            float(loss_max[k]),
            float(loss_final[k]),
            float(lam_final[k] / lam_ntk[s]),
            diverged,
            spec.rise_tol,
            spec.curvature_tol,
        )
        records.append(
            {
                "activation": activation,
                "rate": rates[a],
                "member": lo + s,
                "lambda0": float(lam0[s]),
                "lambda0_ntk": float(lam_ntk[s]),
                "lambda0_hessian": float(lam_hess[s]),
                "eta": float(eta[k]),
                "phase": phase,
                "loss0": float(loss0[k]),
                "loss_max": float(loss_max[k]),
                "loss_final": float(loss_final[k]),
                "lambda_final": float(lam_final[k]),
                "eta_lambda_final": float(eta[k] * lam_final[k]),
                "marks": marks,
                "loss_curve": [float(lc[k]) for lc in loss_curve],
                "lambda_curve": [float(lc[k]) for lc in lam_curve],
            }
        )
    return records


def _majority(phases: list[str], which: tuple[str, ...]) -> bool:
    return sum(p in which for p in phases) * 2 > len(phases)


def phase_rows(spec: CatapultSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per activation and rate: phase counts with Wilson intervals, median final eta * lambda;
    then per activation the measured boundaries (``kind = boundary``): the lazy-catapult edge
    between the largest rate where most runs are lazy and the smallest above it where most are
    not, and the maximal rate between the largest rate where most runs converge (lazy or
    catapult) and the smallest above it where most diverge."""
    rows = []
    for act in dict.fromkeys(r["activation"] for r in records):
        mine = [r for r in records if r["activation"] == act]
        per_rate = []
        for c in sorted({r["rate"] for r in mine}):
            at = [r for r in mine if r["rate"] == c]
            n = len(at)
            row = {"kind": "rate", "activation": act, "rate": c, "n": n}
            for phase in PHASES:
                k = sum(r["phase"] == phase for r in at)
                lo, hi = wilson_interval(k, n)
                row |= {f"p_{phase}": k / n, f"{phase}_ci_low": lo, f"{phase}_ci_high": hi}
            cat = [r for r in at if r["phase"] == "catapult"]
            row["catapult_final_below_2"] = sum(r["eta_lambda_final"] < 2 for r in cat)
            finite = sorted(
                r["eta_lambda_final"] for r in at if math.isfinite(r["eta_lambda_final"])
            )
            row["eta_lambda_final_median"] = finite[len(finite) // 2] if finite else math.nan
            row["loss_peak_ratio_median"] = sorted(r["loss_max"] / r["loss0"] for r in at)[n // 2]
            row["phases"] = [r["phase"] for r in at]
            per_rate.append(row)
        rows += per_rate
        rows.append({"kind": "boundary", "activation": act, **boundaries(per_rate)})
    return rows


def boundaries(per_rate: list[dict[str, Any]]) -> dict[str, float]:
    """The measured edges (see :func:`phase_rows`); nan where the sweep does not bracket one."""
    rates = [r["rate"] for r in per_rate]
    lazy = [_majority(r["phases"], ("lazy",)) for r in per_rate]
    conv = [_majority(r["phases"], ("lazy", "catapult")) for r in per_rate]
    div = [_majority(r["phases"], ("divergent",)) for r in per_rate]

    def edge(below: list[bool], above: list[bool]) -> tuple[float, float]:
        last = max((i for i, b in enumerate(below) if b), default=None)
        if last is None:
            return math.nan, rates[0] if above[0] else math.nan
        nxt = next((i for i in range(last + 1, len(rates)) if above[i]), None)
        return rates[last], rates[nxt] if nxt is not None else math.nan

    lazy_lo, lazy_hi = edge(lazy, [not b for b in lazy])
    max_lo, max_hi = edge(conv, div)
    return {
        "lazy_edge_low": lazy_lo,
        "lazy_edge_high": lazy_hi,
        "max_rate_low": max_lo,
        "max_rate_high": max_hi,
    }


def claim_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's claims, measured: the lazy edge at eta = 2 / lambda0 (both activations), the
    maximal rate at 4 / lambda0 (linear) and above the linear model's measured one (ReLU, the
    paper: about 12 / lambda0), and the
    catapult's final curvature below 2 / eta."""
    out = []
    bounds = [r for r in rows if r["kind"] == "boundary"]
    for b in bounds:
        act = b["activation"]
        lo, hi = b["lazy_edge_low"], b["lazy_edge_high"]
        out.append(
            {
                "kind": "claim",
                "activation": act,
                "claim": f"lazy phase ends at eta = 2 / lambda0 ({act})",
                "measured": (lo + hi) / 2,
                "holds": lo <= 2 <= hi,
                "detail": f"most runs lazy up to eta * lambda0 = {lo:g}, not lazy from {hi:g}",
            }
        )
        lo, hi = b["max_rate_low"], b["max_rate_high"]
        if act == "linear":
            claim, holds = "maximal rate is 4 / lambda0 (linear)", lo <= 4 <= hi
        else:
            linear = next((r for r in bounds if r["activation"] == "linear"), None)
            ref = linear["max_rate_low"] if linear else 4.0
            claim = f"maximal rate is above the linear model's ({act}; paper: about 12 / lambda0)"
            holds = lo > ref
        out.append(
            {
                "kind": "claim",
                "activation": act,
                "claim": claim,
                "measured": lo,
                "holds": holds,
                "detail": f"most runs converge up to eta * lambda0 = {lo:g}, most diverge from "
                f"{hi:g}",
            }
        )
        cat = [r for r in rows if r["kind"] == "rate" and r["activation"] == act]
        n_cat = sum(round(r["p_catapult"] * r["n"]) for r in cat)
        below = sum(r["catapult_final_below_2"] for r in cat)
        if n_cat:
            out.append(
                {
                    "kind": "claim",
                    "activation": act,
                    "claim": f"catapult ends with curvature below 2 / eta ({act})",
                    "measured": below / n_cat,
                    "holds": below == n_cat,
                    "detail": f"{below} of {n_cat} catapult runs end with eta * lambda < 2",
                }
            )
    return out


class Catapult:
    """The ``catapult`` experiment (phases of large-learning-rate GD on wide two-layer nets)."""

    name = "catapult"
    spec_type = CatapultSpec
    description = "the catapult phase: lazy, catapult and divergent GD against eta * lambda0"

    def tasks(self, spec: CatapultSpec) -> list[Task]:
        groups = [(f"act={a}", {"activation": a}) for a in spec.activations]
        return seed_tasks(groups, spec.seeds, spec.seeds_per_task)

    def run_task(
        self, spec: CatapultSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        p = task.params
        return train_rates(spec, p["activation"], p["lo"], p["hi"])

    def summarize(self, spec: CatapultSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = phase_rows(spec, records)
        return [{k: v for k, v in r.items() if k != "phases"} for r in rows] + claim_rows(rows)

    def figures(
        self, spec: CatapultSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.zoo_dynamics_figures import plot_catapult

        rows = [r for r in phase_rows(spec, records) if r["kind"] == "rate"]
        paths = []
        for act in dict.fromkeys(r["activation"] for r in records):
            mine = [r for r in records if r["activation"] == act]
            title = (
                f"Catapult, two-layer {act} net of width {spec.width}, {spec.samples} samples, "
                f"{rows[0]['n']} seeds per rate"
            )
            path = out_dir / f"catapult_{act}.png"
            paths.append(
                plot_catapult(mine, [r for r in rows if r["activation"] == act], path, title)
            )
        return paths
