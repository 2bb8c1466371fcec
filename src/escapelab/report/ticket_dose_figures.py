"""The figure of the ``ticket-dose`` experiment: failure rate of winning tickets against the
dose, with the noise floor as a band and each arm's threshold marked.

Drawn from the summary rows alone (:meth:`escapelab.experiments.ticket_dose.TicketDose.
summarize`), so it shows exactly what the tables say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from escapelab.report.style import NEUTRAL, OKABE_ITO, finish, new_figure

# one panel per perturbation kind: its axis label and where "no perturbation" sits on it
PANELS = {
    "scale": ("scale alpha of the rest", 1.0),
    "noise": ("noise sigma added to the rest", 0.0),
}


def _problems(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["ticket_kind"], r["problem"]) for r in rows))


def plot_dose(rows: list[dict[str, Any]], path: Path) -> Path:
    """One row of panels per ticket kind and problem, one column per perturbation kind (scale,
    noise): the failure rate at each dose with its Wilson 95 % interval (filled where the
    difference from the floor lies above 0), the floor's rate and interval as a grey band
    (drawn at no perturbation too), and a dashed line at each arm's threshold."""
    problems = _problems(rows)
    kinds = [k for k in PANELS if any(r.get("perturbation") == k for r in rows)] or ["scale"]
    fig, axes = new_figure(
        len(problems),
        len(kinds),
        figsize=(4.6 * len(kinds), 3.4 * len(problems)),
    )
    axes = np.asarray(axes, dtype=object).reshape(len(problems), len(kinds))
    for i, (ticket_kind, problem) in enumerate(problems):
        mine = [r for r in rows if (r["ticket_kind"], r["problem"]) == (ticket_kind, problem)]
        floor = next(r for r in mine if r["role"] == "floor")
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            label, origin = PANELS[kind]
            doses = sorted(
                (r for r in mine if r["role"] == "dose" and r["perturbation"] == kind),
                key=lambda r: r["size"],
            )
            if floor["n"]:
                ax.axhspan(floor["ci_low"], floor["ci_high"], color="0.88", zorder=0)
                ax.axhline(floor["failure_rate"], color=NEUTRAL, lw=1, label="floor (95 %)")
            for above in (False, True):
                pts = [r for r in doses if r["above_floor"] is above and r["n"]]
                if not pts:
                    continue
                ax.errorbar(
                    [r["size"] for r in pts],
                    [r["failure_rate"] for r in pts],
                    yerr=[
                        [r["failure_rate"] - r["ci_low"] for r in pts],
                        [r["ci_high"] - r["failure_rate"] for r in pts],
                    ],
                    fmt="o",
                    mfc=OKABE_ITO["vermillion"] if above else "white",
                    color=OKABE_ITO["vermillion"] if above else "k",
                    capsize=3,
                    label="above the floor" if above else "not above the floor",
                )
            marks = [
                t["threshold"]
                for t in mine
                if t["role"] == "threshold"
                and t["threshold"] is not None
                and (kind == "noise") == (t["arm"] == "noise")
            ]
            for x in marks:
                ax.axvline(x, color=OKABE_ITO["vermillion"], ls="--", lw=1)
            ax.axvline(origin, color=NEUTRAL, ls=":", lw=1)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(label)
            ax.set_ylabel("failure rate of winning tickets")
            ax.set_title(f"{ticket_kind} level, {problem}", fontsize=9)
    return finish(fig, axes, path, title="Winning tickets: dose-response against the floor")


__all__ = ["plot_dose"]
