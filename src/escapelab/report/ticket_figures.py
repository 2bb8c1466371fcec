"""Figures of the lottery-ticket experiments: IMP curves (E6), the linear path from the dense
network to its ticket, and the perturbation test (E3)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

from escapelab.landscape.geometry import Interpolation
from escapelab.report.geometry_figures import plot_interpolation
from escapelab.report.style import ROLE_COLORS, finish, new_figure, series_color

if TYPE_CHECKING:
    from escapelab.report.ticket_interpolation import TicketPair

PERCENT_TICKS = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1)

FIXED = ("none", "reshuffle", "redraw")
ROLE_LABELS = {
    "ticket": "winning ticket (IMP, rewound)",
    "reinit": "same mask, random re-init",
    "random_mask": "random mask, same layer densities",
}


def plot_lottery(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Test accuracy (test loss for regression data) at the early-stopping step and the
    early-stopping step itself against the fraction of weights remaining (log axis), one line
    per role with the seeds' spread."""
    fig, (acc_ax, es_ax) = new_figure(1, 2, figsize=(11, 4.2))
    # classification: accuracy in %; regression (no accuracy): the test loss, on a log axis
    regression = all(r["test_acc_es"] != r["test_acc_es"] for r in rows)
    key, scale = ("test_loss_es", 1.0) if regression else ("test_acc_es", 100.0)
    for role, label in ROLE_LABELS.items():
        color = ROLE_COLORS[role]
        mine = sorted((r for r in rows if r["role"] == role), key=lambda r: -r["density"])
        if not mine:
            continue
        x = [100 * r["density"] for r in mine]
        acc_ax.plot(x, [scale * r[key] for r in mine], "o-", color=color, label=label, ms=3)
        acc_ax.fill_between(
            x,
            [scale * r[f"{key}_min"] for r in mine],
            [scale * r[f"{key}_max"] for r in mine],
            color=color,
            alpha=0.15,
            lw=0,
        )
        es = [r["es_step"] for r in mine]
        sd = [r["es_step_std"] for r in mine]
        es_ax.errorbar(x, es, yerr=sd, fmt="o-", color=color, label=label, ms=3, capsize=2)
    dense = [r for r in rows if r["role"] == "ticket" and r["prune_level"] == 0]
    if dense:
        acc_ax.axhline(scale * dense[0][key], color="k", ls=":", lw=1, label="dense")
    for ax in (acc_ax, es_ax):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(PERCENT_TICKS))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.grid(alpha=0.3, which="both")
    if regression:
        acc_ax.set_yscale("log")
    what = "test loss" if regression else "test accuracy"
    acc_ax.set_ylabel(f"{what} at early stopping" + ("" if regression else " (%)"))
    acc_ax.set_title(f"{what} (line: mean, band: min-max over seeds)", fontsize=9)
    es_ax.set_ylabel("early-stopping step (min validation loss)")
    es_ax.set_title("early-stopping step (mean ± sd over seeds)", fontsize=9)
    return finish(fig, (acc_ax, es_ax), path, title=title, legend_loc="lower left")


def plot_perturbation(rows: list[dict[str, Any]], path: Path) -> Path:
    """E3: failure rate of winning tickets (Wilson 95 % intervals) and the overlap of the trained
    network's largest weights or units with the ticket, against the perturbation's size; one
    column per perturbation kind, one line per ticket kind and problem."""
    columns = [("scale", "scale alpha of the rest"), ("noise", "noise sigma (init units)")]
    fig, axes = new_figure(2, 3, figsize=(13, 7), sharey="row")
    series = list(dict.fromkeys((r["ticket_kind"], r["problem"]) for r in rows))
    for s, (ticket_kind, problem) in enumerate(series):
        mine = [r for r in rows if r["ticket_kind"] == ticket_kind and r["problem"] == problem]
        style = {"color": series_color(s), "capsize": 3, "ms": 4}
        label = f"{ticket_kind}: {problem}"
        for c, (kind, _) in enumerate(columns):
            pts = sorted((r for r in mine if r["perturbation"] == kind), key=lambda r: r["size"])
            if not pts:
                continue
            x = [r["size"] for r in pts]
            _rate_bars(axes[0, c], x, pts, fmt="o-", label=label, **style)
            axes[1, c].plot(x, [r["mean_overlap"] for r in pts], "o-", color=style["color"])
        fixed = [r for r in mine if r["perturbation"] in FIXED]
        x = [FIXED.index(r["perturbation"]) + 0.1 * s for r in fixed]
        _rate_bars(axes[0, 2], x, fixed, fmt="s", label=label, **style)
        axes[1, 2].plot(x, [r["mean_overlap"] for r in fixed], "s", color=style["color"])
        chance = [r["chance_overlap"] for r in mine if r.get("chance_overlap") is not None]
        for ax in axes[1]:
            if chance:
                ax.axhline(sum(chance) / len(chance), color=style["color"], ls=":", lw=1)
    for c, (_, title) in enumerate(columns):
        axes[1, c].set_xlabel(title)
    for ax in axes[:, 2]:
        ax.set_xticks(range(len(FIXED)), ["unperturbed", "unperturbed,\nreshuffled", "re-drawn"])
        ax.set_xlim(-0.5, len(FIXED) - 0.5 + 0.1 * len(series))
    axes[1, 2].set_xlabel("dotted: overlap expected of an unrelated mask")
    axes[0, 0].set_ylabel("failure rate of winning tickets")
    axes[1, 0].set_ylabel("overlap of trained network with ticket")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylim(-0.03, 1.03)
    title = "E3: do winning tickets keep winning when the rest of the network is perturbed?"
    return finish(fig, axes, path, title=title)


def _rate_bars(ax: Any, x: list[float], rows: list[dict[str, Any]], **style: Any) -> None:
    """Failure rates with their Wilson intervals as error bars."""
    rate = [r["failure_rate"] for r in rows]
    err = [
        [r["failure_rate"] - r["ci_low"] for r in rows],
        [r["ci_high"] - r["failure_rate"] for r in rows],
    ]
    ax.errorbar(x, rate, yerr=err, **style)


def plot_ticket_interpolation(
    result: Interpolation, pair: TicketPair, path: Path, title: str
) -> Path:
    """The dense-to-ticket path of
    :func:`~escapelab.report.ticket_interpolation.ticket_interpolation`
    (test loss, test accuracy on the right axis, barrier), titled with the stored end
    accuracies so a reader can check the endpoints against the run's table."""
    ends = (
        ""
        if pair.regression
        else f"\nstored test accuracy: dense {100 * pair.dense_record['test_acc']:.1f} %, "
        f"ticket {100 * pair.ticket_record['test_acc']:.1f} %"
    )
    return plot_interpolation(result, path, title + ends)
