"""Figures of the experiment zoo: random-feature regression against its theory, double descent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from escapelab.report.style import OKABE_ITO, finish, new_figure

OPT_COLOR = OKABE_ITO["blue"]
TINY_COLOR = OKABE_ITO["vermillion"]
KERNEL_COLOR = OKABE_ITO["black"]


def plot_random_features(
    points: list[dict[str, Any]], curves: list[dict[str, Any]], spec: Any, path: Path, title: str
) -> Path:
    """Test risk against k (at n_fixed) and against n (at k_fixed), log-log: the theory's
    curves at the optimal and the tiny ridge (lines), the measured means with standard errors
    (points), kernel ridge regression (dashed, and the n sweep's KRR points in grey)."""
    fig, axes = new_figure(1, 2, figsize=(11.5, 4.4))
    for ax, sweep, axis in ((axes[0], "k", "k"), (axes[1], "n", "n")):
        finite = sorted(
            (p for p in points if p["sweep"] == sweep and p["k"] != "inf"), key=lambda p: p[axis]
        )
        kernel = sorted(
            (p for p in points if p["sweep"] == sweep and p["k"] == "inf"), key=lambda p: p["n"]
        )
        line = sorted(
            (c for c in curves if c["sweep"] == sweep and c["k"] != "inf"), key=lambda c: c[axis]
        )
        if line:
            x = [c[axis] for c in line]
            ax.plot(
                x, [c["test_opt"] for c in line], color=OPT_COLOR, label="theory, optimal ridge"
            )
            ax.plot(
                x,
                [c["test_tiny"] for c in line],
                color=TINY_COLOR,
                lw=1,
                label=f"theory, ridge {min(spec.ridges):.0e}",
            )
        xs = [p[axis] for p in finite]
        ax.errorbar(
            xs,
            [p["test_opt"] for p in finite],
            yerr=[p["test_opt_se"] for p in finite],
            fmt="o",
            color=OPT_COLOR,
            ms=4,
            capsize=2,
            label="measured, optimal ridge",
        )
        ax.errorbar(
            xs,
            [p["test_tiny"] for p in finite],
            yerr=[p["test_tiny_se"] for p in finite],
            fmt="s",
            mfc="none",
            color=TINY_COLOR,
            ms=4,
            capsize=2,
            label="measured, tiny ridge",
        )
        inf_curve = [c for c in curves if c["sweep"] == sweep and c["k"] == "inf"]
        if sweep == "k":
            if kernel:
                ax.axhline(
                    kernel[0]["test_opt"],
                    color=KERNEL_COLOR,
                    ls="--",
                    lw=1,
                    label="measured kernel (k = inf), optimal ridge",
                )
            if inf_curve:
                ax.axhline(
                    inf_curve[0]["test_opt"],
                    color=KERNEL_COLOR,
                    ls=":",
                    lw=1,
                    label="theory kernel",
                )
            ax.axvline(spec.n_fixed, color="0.6", lw=0.8)
            ax.set_xlabel(f"features k (n = {spec.n_fixed})")
        else:
            if kernel:
                ax.plot(
                    [p["n"] for p in kernel],
                    [p["test_opt"] for p in kernel],
                    "D",
                    color="0.45",
                    ms=3,
                    label="measured kernel (k = inf)",
                )
            if inf_curve:
                inf_curve.sort(key=lambda c: c["n"])
                ax.plot(
                    [c["n"] for c in inf_curve],
                    [c["test_opt"] for c in inf_curve],
                    color="0.45",
                    ls=":",
                    lw=1,
                    label="theory kernel",
                )
            ax.axvline(spec.k_fixed, color="0.6", lw=0.8)
            ax.set_xlabel(f"samples n (k = {spec.k_fixed})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("test risk (population MSE)")
        ax.grid(alpha=0.3, which="both")
    return finish(fig, axes, path, title=title, legend_kw={"fontsize": 7})


def plot_double_descent(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Test error (left) and train error on the (possibly noisy) training labels (right)
    against width, log x axis, one line per label-noise level with the seeds' standard error."""
    fig, (test_ax, train_ax) = new_figure(1, 2, figsize=(11, 4.2))
    for i, noise in enumerate(sorted({r["label_noise"] for r in rows})):
        mine = sorted((r for r in rows if r["label_noise"] == noise), key=lambda r: r["width"])
        color = (OPT_COLOR, TINY_COLOR, KERNEL_COLOR)[i % 3]
        label = f"{100 * noise:g} % label noise"
        w = [r["width"] for r in mine]
        test_ax.errorbar(
            w,
            [100 * r["test_err"] for r in mine],
            yerr=[100 * r["test_err_se"] for r in mine],
            fmt="o-",
            ms=3,
            capsize=2,
            color=color,
            label=label,
        )
        train_ax.plot(w, [100 * r["train_err"] for r in mine], "o-", ms=3, color=color, label=label)
    for ax, what in ((test_ax, "test error (%)"), (train_ax, "train error on its labels (%)")):
        ax.set_xscale("log")
        ax.set_xlabel("width n")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3, which="both")
    return finish(fig, (test_ax, train_ax), path, title=title)


__all__ = ["plot_double_descent", "plot_random_features"]
