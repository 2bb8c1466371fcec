"""Figures of the ``scaling`` experiment: P(fail) against width on a log scale with every law,
the laws' deviance residuals, and the problem search.

Each figure is drawn from the summary rows alone (:meth:`escapelab.experiments.scaling.Scaling.
summarize`), so it shows exactly what the tables say.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from escapelab.report.style import OKABE_ITO, finish, new_figure

# one colour and line style per law; the zero-parameter lottery laws dashed
LAW_STYLE = {
    "lottery_subsets": (OKABE_ITO["vermillion"], "--"),
    "lottery_disjoint": (OKABE_ITO["orange"], "--"),
    "lottery_fitted": (OKABE_ITO["reddish_purple"], ":"),
    "escape": (OKABE_ITO["blue"], "-"),
}
# the smallest rate drawn on the log axis: predictions below it are clipped there
FLOOR = 1e-6


def _problems(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["problem"] for r in rows if r["role"] == "width"))


def _aic_label(rows: list[dict[str, Any]], problem: str, law: str) -> str:
    row = next(
        (r for r in rows if r["role"] == "law" and r["problem"] == problem and r["law"] == law),
        None,
    )
    return f"{law} (ΔAIC {row['delta_aic']:.1f})" if row else law


def plot_rates(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per chosen problem: measured P(fail) with Wilson 95 % intervals (an open marker
    at the upper bound where no failure was seen), and each law's prediction, the lottery laws
    with the band their measured p carries; ΔAIC in the legend."""
    names = _problems(rows)
    fig, axes = new_figure(1, len(names), figsize=(5.2 * len(names), 4.2))
    axes = [axes] if len(names) == 1 else list(axes)
    for ax, name in zip(axes, names, strict=True):
        mine = [r for r in rows if r["role"] == "width" and r["problem"] == name]
        seen = [r for r in mine if r["failures"]]
        zero = [r for r in mine if not r["failures"] and r["certified"]]
        ax.errorbar(
            [r["width"] for r in seen],
            [r["p_fail"] for r in seen],
            yerr=[
                [r["p_fail"] - max(r["ci_low"], FLOOR) for r in seen],
                [r["ci_high"] - r["p_fail"] for r in seen],
            ],
            fmt="o",
            color="k",
            capsize=3,
            label="measured (Wilson 95 %)",
        )
        if zero:
            ax.plot(
                [r["width"] for r in zero],
                [r["ci_high"] for r in zero],
                "v",
                mfc="none",
                color="k",
                label="no failure: upper bound",
            )
        widths = [r["width"] for r in mine]
        for law, (color, style) in LAW_STYLE.items():
            key = f"pred_{law}"
            if not all(key in r for r in mine if r["width"] > mine[0]["r_star"]):
                continue
            wider = [r for r in mine if key in r]
            ax.plot(
                [r["width"] for r in wider],
                [max(r[key], FLOOR) for r in wider],
                style,
                color=color,
                label=_aic_label(rows, name, law),
            )
        band = [r for r in mine if "pred_lottery_subsets_low" in r]
        if band:
            ax.fill_between(
                [r["width"] for r in band],
                [max(r["pred_lottery_subsets_low"], FLOOR) for r in band],
                [max(r["pred_lottery_subsets_high"], FLOOR) for r in band],
                color=LAW_STYLE["lottery_subsets"][0],
                alpha=0.15,
                lw=0,
                label="lottery_subsets, from q0's interval",
            )
        ax.set_yscale("log")
        ax.set_ylim(FLOOR / 2, 1.2)
        ax.set_xticks(widths)
        ax.set_xlabel("student width m")
        ax.set_ylabel("P(fail)")
        ax.set_title(name, fontsize=9)
    return finish(
        fig,
        axes[0] if len(axes) == 1 else axes,
        path,
        title="P(fail) vs width: measured and the laws (log scale)",
    )


def plot_residuals(rows: list[dict[str, Any]], path: Path) -> Path:
    """The signed deviance residual of every law at every scored width, one panel per problem
    (|residual| > 2 is a misfit at about the 5 % level; the axis is clipped at ±10)."""
    names = _problems(rows)
    fig, axes = new_figure(1, len(names), figsize=(5.2 * len(names), 3.6))
    axes = [axes] if len(names) == 1 else list(axes)
    for ax, name in zip(axes, names, strict=True):
        mine = [r for r in rows if r["role"] == "width" and r["problem"] == name]
        for law, (color, style) in LAW_STYLE.items():
            pts = [(r["width"], r[f"res_{law}"]) for r in mine if f"res_{law}" in r]
            if pts:
                ax.plot(
                    [w for w, _ in pts],
                    [max(-10, min(10, v)) for _, v in pts],
                    "o" + style,
                    color=color,
                    label=law,
                )
        ax.axhspan(-2, 2, color="0.9", zorder=0)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_ylim(-10.5, 10.5)
        ax.set_xticks(sorted({r["width"] for r in mine}))
        ax.set_xlabel("student width m")
        ax.set_ylabel("deviance residual")
        ax.set_title(name, fontsize=9)
    return finish(
        fig,
        axes[0] if len(axes) == 1 else axes,
        path,
        title="Residuals of each law (grey: |r| < 2)",
    )


def plot_search(rows: list[dict[str, Any]], band: tuple[float, float], path: Path) -> Path:
    """P(fail at m = r*) of every problem searched, with its interval, the band shaded and the
    chosen problems marked."""
    search = [r for r in rows if r["role"] == "search" and not math.isnan(r["p_fail"])]
    fig, ax = new_figure(figsize=(6.4, 0.3 * len(search) + 1.6))
    ys = range(len(search))
    for y, r in zip(ys, search, strict=True):
        color = OKABE_ITO["vermillion"] if r["chosen"] else "k"
        ax.errorbar(
            [r["p_fail"]],
            [y],
            xerr=[[r["p_fail"] - r["ci_low"]], [r["ci_high"] - r["p_fail"]]],
            fmt="o",
            color=color,
            capsize=2,
        )
    ax.axvspan(*band, color="0.9", zorder=0)
    ax.set_yticks(list(ys), [r["problem"] for r in search], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(fail at m = r*) (Wilson 95 %; red: chosen)")
    return finish(fig, ax, path, title="Problem search", legend_loc=None)


def plot_scaling(
    rows: list[dict[str, Any]], band: tuple[float, float], out_dir: Path
) -> list[Path]:
    """Every figure the rows allow: the search always, rates and residuals once a problem has
    widths."""
    paths = [plot_search(rows, band, out_dir / "scaling_search.png")]
    if _problems(rows):
        paths.append(plot_rates(rows, out_dir / "scaling_rates.png"))
        if any(r["role"] == "law" for r in rows):
            paths.append(plot_residuals(rows, out_dir / "scaling_residuals.png"))
    return paths
