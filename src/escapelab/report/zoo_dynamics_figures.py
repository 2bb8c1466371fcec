"""Figures of the experiment zoo, part 2 (when more parameters optimize faster): implicit
acceleration by depth, the catapult phase, preconditioned matrix sensing."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from escapelab.report.style import OKABE_ITO, finish, new_figure, series_color

DEPTH_COLORS = {"depth2": OKABE_ITO["vermillion"], "depth3": OKABE_ITO["reddish_purple"]}


def _median_curve(runs: list[dict[str, Any]], key: str = "curve") -> list[float]:
    """The pointwise median over seeds (nan where a seed diverged counts as +inf)."""
    return [
        statistics.median(r[key][i] if math.isfinite(r[key][i]) else math.inf for r in runs)
        for i in range(len(runs[0][key]))
    ]


def plot_acceleration(
    records: list[dict[str, Any]],
    best: list[dict[str, Any]],
    steps: list[int],
    eps: float,
    path: Path,
    title: str,
) -> Path:
    """One panel per p: the median relative excess loss against the iteration (log-log) of
    every method at its best learning rate; depth-N in warm colours, thick; the dashed line is
    the target ``eps``."""
    ps = sorted({r["p"] for r in records})
    fig, axes = new_figure(1, len(ps), figsize=(5.6 * len(ps), 4.4))
    axes = [axes] if len(ps) == 1 else list(axes)
    for ax, p in zip(axes, ps, strict=True):
        rows = [b for b in best if b["p"] == p and b["dataset"] == records[0]["dataset"]]
        for i, row in enumerate(rows):
            runs = [
                r
                for r in records
                if r["p"] == p and r["method"] == row["method"] and r["lr"] == row["best_lr"]
            ]
            deep = row["method"] in DEPTH_COLORS
            ax.plot(
                [max(s, 1) for s in steps],
                _median_curve(runs),
                color=DEPTH_COLORS.get(row["method"], series_color(i)),
                lw=2.2 if deep else 1.1,
                ls="-" if deep or row["method"] == "gd" else "--",
                label=f"{row['method']} (lr {row['best_lr']:g})",
            )
        ax.axhline(eps, color="0.5", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("(L - L*) / (L0 - L*)")
        ax.set_title(f"l{p:g} loss", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    return finish(fig, axes, path, title=title, legend_kw={"fontsize": 7})


__all__ = ["plot_acceleration", "plot_catapult", "plot_matrix_sensing"]


PHASE_COLORS = {
    "lazy": OKABE_ITO["blue"],
    "catapult": OKABE_ITO["orange"],
    "divergent": OKABE_ITO["vermillion"],
    "stuck": "0.6",
}


def plot_catapult(
    records: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path, title: str
) -> Path:
    """Left: the share of runs in each phase against eta * lambda0 (95 % Wilson intervals),
    with the linear model's edges 2 and 4 dashed. Middle and right: the loss (relative to L_0)
    and eta * lambda_t of one seed at a few rates, the curvature line at 2."""
    fig, (ax_p, ax_l, ax_c) = new_figure(1, 3, figsize=(15, 4.4))
    rates = [r["rate"] for r in rows]
    for phase, color in PHASE_COLORS.items():
        share = [r[f"p_{phase}"] for r in rows]
        if not any(share):
            continue
        err = [
            [s - r[f"{phase}_ci_low"] for s, r in zip(share, rows, strict=True)],
            [r[f"{phase}_ci_high"] - s for s, r in zip(share, rows, strict=True)],
        ]
        ax_p.errorbar(rates, share, yerr=err, fmt="o-", ms=3, capsize=2, color=color, label=phase)
    for edge in (2, 4):
        ax_p.axvline(edge, color="0.4", ls="--", lw=0.8)
    ax_p.set_xscale("log")
    ax_p.set_xlabel("eta * lambda0")
    ax_p.set_ylabel("share of runs")
    member = min(r["member"] for r in records)
    shown = [r for r in records if r["member"] == member]
    picks = sorted({r["rate"] for r in shown})
    picks = picks[:: max(len(picks) // 6, 1)]
    for i, r in enumerate(
        sorted((r for r in shown if r["rate"] in picks), key=lambda r: r["rate"])
    ):
        color = series_color(i)
        label = f"{r['rate']:g} ({r['phase']})"
        ax_l.plot(r["marks"], [v / r["loss0"] for v in r["loss_curve"]], color=color, label=label)
        ax_c.plot(r["marks"], [r["eta"] * v for v in r["lambda_curve"]], color=color, label=label)
    ax_c.axhline(2, color="0.4", ls="--", lw=0.8)
    ax_l.set_yscale("log")
    ax_l.set_ylabel("loss / L0 (one seed)")
    ax_c.set_ylabel("eta * lambda_t (top NTK eigenvalue)")
    for ax in (ax_l, ax_c):
        ax.set_xlabel("step")
    for ax in (ax_p, ax_l, ax_c):
        ax.grid(alpha=0.3, which="both")
    ax_c.legend(fontsize=7, title="eta * lambda0", title_fontsize=7)
    return finish(fig, (ax_p, ax_l, ax_c), path, title=title, legend_kw={"fontsize": 7})


METHOD_COLORS = {
    "gd": OKABE_ITO["black"],
    "scaledgd": OKABE_ITO["blue"],
    "precgd": OKABE_ITO["vermillion"],
}


def plot_matrix_sensing(
    records: list[dict[str, Any]], rows: list[dict[str, Any]], spec: Any, path: Path, title: str
) -> Path:
    """Left: median iterations to ``eps`` against kappa (r = ``rank``), the seeds' range as
    bars, open markers where the median run never reached it (drawn at ``max_iters``). Middle:
    the same against r (kappa = ``kappa_fixed``). Right: relative error against the iteration at
    the largest kappa, one seed per method (log iteration axis; iteration 0 drawn at 1)."""
    fig, (ax_k, ax_r, ax_c) = new_figure(1, 3, figsize=(15, 4.4))
    for method, color in METHOD_COLORS.items():
        for ax, key, mine in (
            (ax_k, "kappa", [r for r in rows if r["method"] == method and r["r"] == spec.rank]),
            (
                ax_r,
                "r",
                [r for r in rows if r["method"] == method and r["kappa"] == spec.kappa_fixed],
            ),
        ):
            mine = sorted(mine, key=lambda r: r[key])
            if not mine:
                continue
            xs = [r[key] for r in mine]
            med = [min(r["iters_median"], spec.max_iters) for r in mine]
            ax.errorbar(
                xs,
                med,
                yerr=[
                    [
                        m - min(r["iters_min"], spec.max_iters)
                        for m, r in zip(med, mine, strict=True)
                    ],
                    [
                        min(r["iters_max"], spec.max_iters) - m
                        for m, r in zip(med, mine, strict=True)
                    ],
                ],
                fmt="-",
                color=color,
                capsize=2,
                label=method if ax is ax_k else None,
            )
            for x, m, r in zip(xs, med, mine, strict=True):
                censored = r["iters_median"] > spec.max_iters
                ax.plot(x, m, "o", color=color, mfc="none" if censored else color, ms=5)
    top = max(spec.kappas)
    for method, color in METHOD_COLORS.items():
        one = [
            r
            for r in records
            if r["method"] == method and r["kappa"] == top and r["r"] == spec.rank
        ]
        if one:
            first = min(one, key=lambda r: r["member"])
            n = len(first["curve"])
            steps = [max(i * spec.record_every, 1) for i in range(n)]
            if first["iters"] is not None and n > 1:  # the last point is the run's stop
                steps[-1] = max(first["iters"], 1)
            ax_c.plot(steps, first["curve"], color=color, label=method)
    ax_c.set_xscale("log")
    ax_c.axhline(spec.eps, color="0.5", ls=":", lw=1)
    ax_c.set_yscale("log")
    ax_c.set_xlabel("iteration")
    ax_c.set_ylabel(f"|XX^T - M*| / |M*| (kappa = {top:g})")
    ax_k.set_xscale("log")
    ax_k.set_xlabel(f"condition number kappa (r = {spec.rank})")
    ax_r.set_xlabel(f"search rank r (kappa = {spec.kappa_fixed:g}, r* = {spec.r_star})")
    for ax in (ax_k, ax_r):
        ax.set_yscale("log")
        ax.set_ylabel(f"iterations to {spec.eps:g}")
    for ax in (ax_k, ax_r, ax_c):
        ax.grid(alpha=0.3, which="both")
    return finish(fig, (ax_k, ax_r, ax_c), path, title=title, legend_kw={"fontsize": 7})
