"""Figures of the experiments, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from escapelab.landscape.classify import CLASSES

CLASS_COLORS = {
    "global_min": "#1b9e77",
    "local_min": "#d95f02",
    "saddle": "#7570b3",
    "flat_channel": "#e7298a",
    "not_converged": "#999999",
    "diverged": "#000000",
}


def plot_success_vs_width(rows: list[dict[str, Any]], r_star: int, path: Path, title: str) -> Path:
    """P(global minimum) vs width with Wilson intervals and the two multi-start predictions."""
    widths = [r["width"] for r in rows]
    p = [r["p_global"] for r in rows]
    err = [
        [r["p_global"] - r["ci_low"] for r in rows],
        [r["ci_high"] - r["p_global"] for r in rows],
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.errorbar(widths, p, yerr=err, fmt="o-", color="k", capsize=3, label="measured (Wilson 95 %)")
    if not all(math.isnan(r["pred_subsets"]) for r in rows):
        ax.plot(
            widths,
            [r["pred_subsets"] for r in rows],
            "s--",
            color="#d95f02",
            label=r"lottery, $K=\binom{m}{r^*}$ overlapping subsets",
        )
        ax.plot(
            widths,
            [r["pred_disjoint"] for r in rows],
            "^:",
            color="#7570b3",
            label=r"lottery, $K=\lfloor m/r^*\rfloor$ disjoint subsets",
        )
    ax.axvline(r_star, color="0.8", lw=1, zorder=0)
    ax.set_xlabel("student width m")
    ax.set_ylabel("P(global minimum)")
    ax.set_ylim(-0.03, 1.03)
    return _finish(fig, ax, title, path, legend_loc="lower right")


def plot_loss_by_width(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Final loss of every member per width (log scale), coloured by endpoint class."""
    widths = sorted({r["width"] for r in records})
    pos = {w: i for i, w in enumerate(widths)}
    floor = 1e-18
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for cls in CLASSES:
        pts = [r for r in records if r["kind"] == cls and math.isfinite(r["loss"])]
        if not pts:
            continue
        # deterministic horizontal jitter from the member index keeps the figure reproducible
        xs = [pos[r["width"]] + 0.3 * (((r["member"] * 0.618034) % 1.0) - 0.5) for r in pts]
        ys = [max(r["loss"], floor) for r in pts]
        ax.scatter(xs, ys, s=14, color=CLASS_COLORS[cls], label=f"{cls} ({len(pts)})", alpha=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set_xlabel("student width m")
    ax.set_ylabel(f"final loss (clipped at {floor:g})")
    return _finish(fig, ax, title, path, legend_loc="best")


def _finish(fig: Any, ax: Any, title: str, path: Path, legend_loc: str) -> Path:
    """Title, legend, layout; save as PNG (creating the folder) and free the figure."""
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc=legend_loc)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


CELL_COLORS = ("#1b9e77", "#e6ab02", "#d95f02", "#999999")


def plot_contingency(
    rows: list[dict[str, Any]], cells: tuple[str, ...], path: Path, title: str
) -> Path:
    """Stacked fractions of the ticket x success table per width (off-diagonal cells labelled)."""
    widths = [r["width"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    bottom = [0.0] * len(rows)
    for cell, color in zip(cells, CELL_COLORS, strict=True):
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
    return _finish(fig, ax, title, path, legend_loc="upper center")


B_COLORS = {
    "positive": "#1b9e77",
    "negative": "#7570b3",
    "indefinite": "#d95f02",
    "degenerate": "#999999",
}


def plot_split_spectrum(runs: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Smallest Hessian eigenvalue of split points vs gamma, coloured by the class of B;
    hollow markers where B's prediction (saddle or minimum) disagrees with the spectrum."""
    seen: dict[tuple, dict[str, Any]] = {}
    for x in runs:
        if x["embedding"] == "split":
            seen.setdefault((x["member"], x["unit"], x["gamma"]), x)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
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
    return _finish(fig, ax, title, path, legend_loc="best")


def plot_escape_curves(runs: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Training loss after perturbing embedded points, relative to the bad minimum's loss."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for escaped, color, label in ((False, "0.6", "stayed"), (True, "#d95f02", "escaped")):
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
    return _finish(fig, ax, title, path, legend_loc="lower left")


def plot_minima_basins(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Each distinct bad minimum: its loss against its basin share, one colour per width."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row in rows:
        if row["minima_losses"]:
            ax.scatter(
                row["minima_losses"],
                row["basin_shares"],
                s=30,
                label=f"m={row['width']}: {row['distinct_bad_minima']} distinct",
            )
    ax.set_xscale("log")
    ax.set_xlabel("loss of the distinct bad minimum")
    ax.set_ylabel("basin share (fraction of seeds)")
    return _finish(fig, ax, title, path, legend_loc="best")


def plot_index_distribution(points: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Counts of non-global critical points by Hessian index, one bar series per parameter count."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
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
    return _finish(fig, ax, title, path, legend_loc="best")
