"""Figures of the ``minima-rarity`` experiment: bad-minimum share and distinct counts against
width, and the Hessian index of critical points against the parameter count.

Each figure is drawn from the summary rows alone (:meth:`escapelab.experiments.minima_rarity.
MinimaRarity.summarize`), so it shows exactly what the tables say.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from escapelab.report.style import OKABE_ITO, finish, new_figure

SOURCE_STYLE = {
    "search": (OKABE_ITO["vermillion"], "o", "saddle search"),
    "endpoint": (OKABE_ITO["blue"], "s", "training endpoints"),
}
# the smallest share drawn on the log axis of the index figure
FLOOR = 1e-5


def plot_by_width(rows: list[dict[str, Any]], r_star: int, path: Path) -> Path:
    """Left: share of students in a bad minimum (Wilson 95 %). Right: distinct bad minima and
    distinct global-minimum pieces reached (summed over teachers), and the possible piece labels
    of T's model modulo permutations times the teachers, on a log axis."""
    widths = [r for r in rows if r["role"] == "width"]
    xs = [r["width"] for r in widths]
    fig, (left, right) = new_figure(1, 2, figsize=(10.0, 4.0))
    left.errorbar(
        xs,
        [r["p_bad_min"] for r in widths],
        yerr=[
            [r["p_bad_min"] - r["bad_ci_low"] for r in widths],
            [r["bad_ci_high"] - r["p_bad_min"] for r in widths],
        ],
        fmt="o-",
        color="k",
        capsize=3,
        label="bad-minimum share (Wilson 95 %)",
    )
    left.axvline(r_star, color="0.6", lw=0.8, ls=":")
    left.set_ylim(-0.02, 1.02)
    left.set_xticks(xs)
    left.set_xlabel("student width m")
    left.set_ylabel("share of students")
    series = [
        ("distinct_bad_minima", OKABE_ITO["vermillion"], "o-", "distinct bad minima"),
        ("distinct_global_pieces", OKABE_ITO["blue"], "s-", "distinct global pieces reached"),
        ("possible", OKABE_ITO["bluish_green"], "--", "possible pieces (T mod perm.) x teachers"),
    ]
    widths = [{**r, "possible": r["piece_orbits"] * r["teachers"]} for r in widths]
    for key, color, style, label in series:
        pts = [(r["width"], r[key]) for r in widths if r[key] > 0]
        if pts:
            right.plot([w for w, _ in pts], [v for _, v in pts], style, color=color, label=label)
    right.set_yscale("log")
    right.set_xticks(xs)
    right.set_xlabel("student width m")
    right.set_ylabel("count (summed over teachers)")
    right.axvline(r_star, color="0.6", lw=0.8, ls=":")
    right.legend(loc="best", fontsize=8)  # finish draws the first panel's legend only
    return finish(fig, [left, right], path, title="Bad minima and global pieces by width")


def plot_index(rows: list[dict[str, Any]], path: Path) -> Path:
    """Left: P(index = 0) of non-global critical points against the parameter count (log axis,
    Wilson 95 %; an open marker at the upper bound where none was seen), with each source's
    fitted exp(a + b P). Right: the mean index against P."""
    fig, (left, right) = new_figure(1, 2, figsize=(10.0, 4.0))
    for source, (color, marker, label) in SOURCE_STYLE.items():
        mine = [r for r in rows if r["role"] == "index" and r["source"] == source]
        if not mine:
            continue
        seen = [r for r in mine if r["index_zero"]]
        none = [r for r in mine if not r["index_zero"]]
        if seen:
            left.errorbar(
                [r["n_params"] for r in seen],
                [r["p_index_zero"] for r in seen],
                yerr=[
                    [r["p_index_zero"] - max(r["ci_low"], FLOOR) for r in seen],
                    [r["ci_high"] - r["p_index_zero"] for r in seen],
                ],
                fmt=marker,
                color=color,
                capsize=3,
                label=label,
            )
        if none:
            left.plot(
                [r["n_params"] for r in none],
                [r["ci_high"] for r in none],
                "v",
                mfc="none",
                color=color,
                label=f"{label}: none of index 0 (upper bound)",
            )
        fit = next((r for r in rows if r["role"] == "fit" and r["source"] == source), None)
        if fit and not math.isnan(fit["slope"]):
            ps = [r["n_params"] for r in mine]
            left.plot(
                ps,
                [max(FLOOR, min(1.0, math.exp(fit["intercept"] + fit["slope"] * p))) for p in ps],
                "--",
                color=color,
                label=f"fit, b = {fit['slope']:.3f} per parameter",
            )
        right.plot(
            [r["n_params"] for r in mine],
            [r["mean_index"] for r in mine],
            marker + "-",
            color=color,
            label=label,
        )
    left.set_yscale("log")
    left.set_ylim(FLOOR / 2, 1.5)
    left.set_xlabel("parameter count P")
    left.set_ylabel("P(index = 0) among non-global critical points")
    right.set_xlabel("parameter count P")
    right.set_ylabel("mean Hessian index")
    return finish(fig, [left, right], path, title="Hessian index against the parameter count")


def plot_rarity(rows: list[dict[str, Any]], r_star: int, out_dir: Path) -> list[Path]:
    """Every figure the rows allow: by width once a width is summarised, the index figure once
    a critical point was found."""
    paths = []
    if any(r["role"] == "width" for r in rows):
        paths.append(plot_by_width(rows, r_star, out_dir / "rarity_by_width.png"))
    if any(r["role"] == "index" for r in rows):
        paths.append(plot_index(rows, out_dir / "rarity_index.png"))
    return paths
