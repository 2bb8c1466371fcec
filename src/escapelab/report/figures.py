"""Figures of the width-sweep, escape, subnetwork and census experiments.

Styling (figure factory, Okabe–Ito colours, title/legend/saving) lives in
:mod:`escapelab.report.style`; no backend is selected and pyplot is never imported.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from escapelab.landscape.classify import CLASSES
from escapelab.report.style import (
    B_COLORS,
    CLASS_COLORS,
    CONTINGENCY_COLORS,
    OKABE_ITO,
    finish,
    new_figure,
    series_color,
)


def plot_success_vs_width(rows: list[dict[str, Any]], r_star: int, path: Path, title: str) -> Path:
    """P(global minimum) vs width with Wilson intervals and the two multi-start predictions;
    P(bad local minimum) with its intervals and the share that ran out of budget (not converged)
    beside it, so that a failure of the landscape is never confused with one of the budget.
    With several teachers (rows of a ``teacher`` each and ``pooled`` ones) every teacher's
    P(global) is drawn faint behind the pooled curves, whose interval is over teachers."""
    fig, ax = new_figure()
    pooled = [r for r in rows if r.get("teacher") == "pooled"]
    measured = "measured (Wilson 95 %)"
    if pooled:
        teachers = [t for t in dict.fromkeys(r.get("teacher") for r in rows) if t != "pooled"]
        for k, seed in enumerate(teachers):
            mine = [r for r in rows if r.get("teacher") == seed]
            ax.plot(
                [r["width"] for r in mine],
                [r["p_global"] for r in mine],
                "-",
                color=OKABE_ITO["black"],
                lw=0.8,
                alpha=0.25,
                label="P(global), each teacher" if k == 0 else None,
            )
        rows = pooled
        measured = f"mean over {pooled[0]['teachers']} teachers (bootstrap 95 %)"
    widths = [r["width"] for r in rows]
    p = [r["p_global"] for r in rows]
    err = [
        [r["p_global"] - r["ci_low"] for r in rows],
        [r["ci_high"] - r["p_global"] for r in rows],
    ]
    ax.errorbar(widths, p, yerr=err, fmt="o-", color="k", capsize=3, label=measured)
    if all("p_bad_min" in r for r in rows):
        bad_err = [
            [r["p_bad_min"] - r["bad_ci_low"] for r in rows],
            [r["bad_ci_high"] - r["p_bad_min"] for r in rows],
        ]
        ax.errorbar(
            widths,
            [r["p_bad_min"] for r in rows],
            yerr=bad_err,
            fmt="v-",
            color=CLASS_COLORS["local_min"],
            capsize=3,
            label="P(bad local minimum)",
        )
        ax.plot(
            widths,
            [r["p_not_converged"] for r in rows],
            "x:",
            color=CLASS_COLORS["not_converged"],
            label="not converged (ran out of budget)",
        )
    if not all(math.isnan(r["pred_subsets"]) for r in rows):
        ax.plot(
            widths,
            [r["pred_subsets"] for r in rows],
            "s--",
            color=OKABE_ITO["reddish_purple"],
            label=r"lottery, $K=\binom{m}{r^*}$ overlapping subsets",
        )
        ax.plot(
            widths,
            [r["pred_disjoint"] for r in rows],
            "^:",
            color=OKABE_ITO["blue"],
            label=r"lottery, $K=\lfloor m/r^*\rfloor$ disjoint subsets",
        )
    ax.axvline(r_star, color="0.8", lw=1, zorder=0)
    ax.set_xlabel("student width m")
    ax.set_ylabel("share of students")
    ax.set_ylim(-0.03, 1.03)
    return finish(fig, ax, path, title=title, legend_loc="center right")


def plot_loss_by_width(
    records: list[dict[str, Any]], path: Path, title: str, tol_global: float | None = None
) -> Path:
    """Final loss of every member per width (log scale), coloured by endpoint class; with
    ``tol_global``, a dashed line at the loss below which an endpoint is a global minimum."""
    widths = sorted({r["width"] for r in records})
    pos = {w: i for i, w in enumerate(widths)}
    floor = 1e-18
    fig, ax = new_figure()
    for cls in CLASSES:
        pts = [r for r in records if r["kind"] == cls and math.isfinite(r["loss"])]
        if not pts:
            continue
        # deterministic horizontal jitter from the member index keeps the figure reproducible
        xs = [pos[r["width"]] + 0.3 * (((r["member"] * 0.618034) % 1.0) - 0.5) for r in pts]
        ys = [max(r["loss"], floor) for r in pts]
        ax.scatter(xs, ys, s=14, color=CLASS_COLORS[cls], label=f"{cls} ({len(pts)})", alpha=0.8)
    if tol_global is not None:
        ax.axhline(
            tol_global, color="k", ls="--", lw=1, label=f"global-minimum tolerance {tol_global:g}"
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_xlabel("student width m")
    ax.set_ylabel(f"final loss (clipped at {floor:g})")
    return finish(fig, ax, path, title=title, legend_loc="best")


def plot_contingency(
    rows: list[dict[str, Any]], cells: tuple[str, ...], path: Path, title: str
) -> Path:
    """Stacked fractions of the ticket x success table per width (off-diagonal cells labelled)."""
    widths = [r["width"] for r in rows]
    fig, ax = new_figure()
    bottom = [0.0] * len(rows)
    for k, cell in enumerate(cells):
        color = CONTINGENCY_COLORS.get(cell, series_color(k))
        frac = [r[cell] / r["n"] for r in rows]
        ax.bar(range(len(rows)), frac, bottom=bottom, color=color, label=cell.replace("_", " "))
        for i, (f, b) in enumerate(zip(frac, bottom, strict=True)):
            if rows[i][cell]:
                ax.text(i, b + f / 2, str(rows[i][cell]), ha="center", va="center", fontsize=8)
        bottom = [b + f for b, f in zip(bottom, frac, strict=True)]
    labels = [
        f"{w}" + (" (sampled)" if r["subsets_sampled"] else "")
        for w, r in zip(widths, rows, strict=True)
    ]
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel("student width m")
    ax.set_ylabel("fraction of students")
    ax.set_ylim(0, 1.45)
    return finish(fig, ax, path, title=title, legend_loc="upper center")


def plot_split_spectrum(runs: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Smallest Hessian eigenvalue of split points vs gamma, coloured by the class of B;
    hollow markers where B's prediction (saddle or minimum) disagrees with the spectrum."""
    seen: dict[tuple, dict[str, Any]] = {}
    for x in runs:
        if x["embedding"] == "split":
            seen.setdefault((x["member"], x["unit"], x["gamma"]), x)
    fig, ax = new_figure()
    for b_class, color in B_COLORS.items():
        pts = [x for x in seen.values() if x["b_class"] == b_class]
        if not pts:
            continue
        agree = [x["predicted_saddle"] == (x["embedded_n_negative"] > 0) for x in pts]
        ax.scatter(
            [x["gamma"] for x in pts],
            [x["embedded_eig_min"] for x in pts],
            s=22,
            facecolors=[color if a else "none" for a in agree],
            edgecolors=color,
            label=f"B {b_class} ({len(pts)})",
        )
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvspan(0.0, 1.0, color="0.93", zorder=0, label=r"$0<\gamma<1$")
    ax.set_yscale("symlog", linthresh=1e-8)
    ax.set_xlabel(r"split parameter $\gamma$")
    ax.set_ylabel("smallest Hessian eigenvalue after splitting")
    return finish(fig, ax, path, title=title, legend_loc="best")


def plot_escape_curves(runs: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Training loss after perturbing embedded points, relative to the bad minimum's loss."""
    fig, ax = new_figure()
    for escaped, color, label in (
        (False, OKABE_ITO["blue"], "stayed"),
        (True, OKABE_ITO["vermillion"], "escaped"),
    ):
        mine = [x for x in runs if x["escaped"] == escaped and x["loss_curve"]]
        for k, x in enumerate(mine):
            rel = [v / x["source_loss"] for v in x["loss_curve"]]
            steps = x["curve_steps"][: len(rel)]
            pairs = [(s, v) for s, v in zip(steps, rel, strict=True) if math.isfinite(v)]
            if pairs:
                ax.plot(
                    *zip(*pairs, strict=True),
                    color=color,
                    lw=0.8,
                    alpha=0.7,
                    label=f"{label} ({len(mine)})" if k == 0 else None,
                )
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("first-order step")
    ax.set_ylabel("loss / loss of the bad minimum")
    return finish(fig, ax, path, title=title, legend_loc="lower left")


def plot_minima_basins(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Each distinct bad minimum: its loss against its basin share, one colour per width; the
    legend says how many seeds of each width ran out of budget (they have no basin to count)."""
    fig, ax = new_figure()
    for row in rows:
        if row["minima_losses"]:
            ax.scatter(
                row["minima_losses"],
                row["basin_shares"],
                s=30,
                label=f"m={row['width']}"
                + (f", teacher {row['teacher']}" if "teacher" in row else "")
                + f": {row['distinct_bad_minima']} distinct"
                + (
                    f", {row['not_converged']} of {row['seeds']} seeds out of budget"
                    if row.get("not_converged")
                    else ""
                ),
            )
    ax.set_xscale("log")
    ax.set_xlabel("loss of the distinct bad minimum")
    ax.set_ylabel("basin share (fraction of seeds)")
    return finish(fig, ax, path, title=title, legend_loc="best")


def plot_index_distribution(points: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Counts of non-global critical points by Hessian index, one bar series per parameter count."""
    fig, ax = new_figure()
    sizes = sorted({p["n_params"] for p in points})
    indices = sorted({p["index"] for p in points}) or [0]
    width = 0.8 / max(1, len(sizes))
    for k, size in enumerate(sizes):
        counts = [sum(p["n_params"] == size and p["index"] == i for p in points) for i in indices]
        ax.bar(
            [i + k * width for i in range(len(indices))], counts, width=width, label=f"P = {size}"
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(indices))], [str(i) for i in indices])
    ax.set_xlabel("Hessian index (number of negative eigenvalues)")
    ax.set_ylabel("critical points found")
    return finish(fig, ax, path, title=title, legend_loc="best")


def plot_spurious_vs_k(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Share of initializations ending at a spurious local minimum against the teacher width k,
    one curve per overparameterization n - k, with Wilson 95 % intervals; the share out of
    budget dotted beside each, so that running out of steps is never read as a minimum."""
    fig, ax = new_figure()
    for idx, extra in enumerate(sorted({r["n"] - r["k"] for r in rows})):
        mine = sorted((r for r in rows if r["n"] - r["k"] == extra), key=lambda r: r["k"])
        ks = [r["k"] for r in mine]
        color = series_color(idx)
        ax.errorbar(
            ks,
            [r["p_spurious"] for r in mine],
            yerr=[
                [r["p_spurious"] - r["spurious_ci_low"] for r in mine],
                [r["spurious_ci_high"] - r["p_spurious"] for r in mine],
            ],
            fmt="o-",
            color=color,
            capsize=3,
            label=f"n = k + {extra}: spurious minimum" if extra else "n = k: spurious minimum",
        )
        if any(r["p_not_converged"] > 0 for r in mine):
            ax.plot(
                ks,
                [r["p_not_converged"] for r in mine],
                "x:",
                color=color,
                label=f"n = k + {extra}: not converged" if extra else "n = k: not converged",
            )
    ax.set_xlabel("teacher width k (= input dimension d)")
    ax.set_ylabel("share of initializations")
    ax.set_ylim(-0.03, 1.03)
    return finish(fig, ax, path, title=title, legend_loc="upper left")
