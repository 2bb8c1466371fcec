"""Figures of the lottery-ticket experiments: IMP curves (E6) and the perturbation test (E3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROLE_STYLE = {
    "ticket": ("#1b9e77", "winning ticket (IMP, rewound)"),
    "reinit": ("#d95f02", "same mask, random re-init"),
    "random_mask": ("#7570b3", "random mask, same layer densities"),
}


def plot_lottery(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Test accuracy at the early-stopping step and the early-stopping step itself against the
    fraction of weights remaining (log axis), one line per role with the seeds' spread."""
    fig, (acc_ax, es_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for role, (color, label) in ROLE_STYLE.items():
        mine = sorted((r for r in rows if r["role"] == role), key=lambda r: -r["density"])
        if not mine:
            continue
        x = [100 * r["density"] for r in mine]
        acc = [100 * r["test_acc_es"] for r in mine]
        acc_ax.plot(x, acc, "o-", color=color, label=label, ms=3)
        acc_ax.fill_between(
            x,
            [100 * r["test_acc_es_min"] for r in mine],
            [100 * r["test_acc_es_max"] for r in mine],
            color=color,
            alpha=0.15,
            lw=0,
        )
        es = [r["es_step"] for r in mine]
        sd = [r["es_step_std"] for r in mine]
        es_ax.errorbar(x, es, yerr=sd, fmt="o-", color=color, label=label, ms=3, capsize=2)
    dense = [r for r in rows if r["role"] == "ticket" and r["level"] == 0]
    if dense:
        acc_ax.axhline(100 * dense[0]["test_acc_es"], color="k", ls=":", lw=1, label="dense")
    for ax in (acc_ax, es_ax):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.grid(alpha=0.3, which="both")
    acc_ax.set_ylabel("test accuracy at early stopping (%)")
    acc_ax.set_title("accuracy (line: mean, band: min-max over seeds)", fontsize=9)
    es_ax.set_ylabel("early-stopping step (min validation loss)")
    es_ax.set_title("early-stopping step (mean ± sd over seeds)", fontsize=9)
    acc_ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
