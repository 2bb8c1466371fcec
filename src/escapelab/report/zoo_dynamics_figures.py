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


__all__ = ["plot_acceleration"]
