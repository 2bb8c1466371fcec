"""The one place where escapelab's figures get their look: figure factory, palette, finishing.

No backend is ever selected. Figures are built with :class:`matplotlib.figure.Figure` directly
(not with ``matplotlib.pyplot``): such a figure renders and saves a PNG through matplotlib's Agg
machinery on its own, so importing or calling escapelab never calls ``matplotlib.use``, never
imports pyplot, and leaves a user's interactive session, notebook or backend choice untouched.
Nothing needs closing either, since no pyplot figure registry holds on to the figure.

Colours come from one colour-blind-safe palette, that of M. Okabe and K. Ito, "Color Universal
Design (CUD): How to make figures and presentations that are friendly to colorblind people"
(2008, https://jfly.uni-koeln.de/color/): its eight colours stay distinguishable under the
common colour-vision deficiencies. The named maps below (endpoint classes, classes of B,
contingency cells, IMP roles, the cycle for unnamed series) all draw from it, so one category has
one colour in every figure; a neutral grey, outside the palette, marks "no verdict" categories.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
"""The Okabe–Ito palette (Okabe & Ito 2008), by the names the authors give the colours."""

NEUTRAL = "#999999"
"""Grey for categories that carry no verdict (not converged, degenerate, neither cell)."""

SERIES_COLORS: tuple[str, ...] = tuple(
    OKABE_ITO[name]
    for name in (
        "blue",
        "orange",
        "bluish_green",
        "vermillion",
        "reddish_purple",
        "sky_blue",
        "yellow",
        "black",
    )
)
"""Colour cycle of every axes made by :func:`new_figure`, for series without a fixed meaning
(widths, parameter counts, problems); the yellow, weakest on white, comes late."""

CLASS_COLORS: dict[str, str] = {
    "global_min": OKABE_ITO["bluish_green"],
    "local_min": OKABE_ITO["vermillion"],
    "saddle": OKABE_ITO["blue"],
    "flat_channel": OKABE_ITO["reddish_purple"],
    "not_converged": NEUTRAL,
    "diverged": OKABE_ITO["black"],
}
"""Endpoint classes of :data:`escapelab.landscape.classify.CLASSES`."""

B_COLORS: dict[str, str] = {
    "positive": OKABE_ITO["bluish_green"],
    "negative": OKABE_ITO["blue"],
    "indefinite": OKABE_ITO["vermillion"],
    "degenerate": NEUTRAL,
}
"""Classes of the splitting matrix B (the escape experiment)."""

CONTINGENCY_COLORS: dict[str, str] = {
    "success_with_ticket": OKABE_ITO["bluish_green"],
    "success_without_ticket": OKABE_ITO["sky_blue"],
    "failure_with_ticket": OKABE_ITO["vermillion"],
    "failure_without_ticket": NEUTRAL,
}
"""Cells of the ticket x success contingency table (the subnetworks experiment)."""

ROLE_COLORS: dict[str, str] = {
    "ticket": OKABE_ITO["bluish_green"],
    "reinit": OKABE_ITO["vermillion"],
    "random_mask": OKABE_ITO["blue"],
}
"""Roles of an IMP run: the rewound winning ticket and its two controls."""

# single-purpose accents, named once so that figures agree on them
LOSS_COLOR = OKABE_ITO["blue"]
ACCURACY_COLOR = OKABE_ITO["orange"]
HIGHLIGHT_COLOR = OKABE_ITO["vermillion"]

FIGSIZE = (6.4, 4.2)
DPI = 130
TITLE_SIZE = 10
LEGEND_SIZE = 8
SEQUENTIAL_CMAP = "viridis"


def series_color(index: int) -> str:
    """The ``index``-th colour of :data:`SERIES_COLORS`, cycling past its end."""
    return SERIES_COLORS[index % len(SERIES_COLORS)]


def ordered_colors(n: int, cmap: str = SEQUENTIAL_CMAP) -> list[tuple[float, ...]]:
    """``n`` colours along a perceptually uniform map, for series with an order (e.g. r*).

    The map's brightest tenth is left out so the last colour stays visible on white.
    """
    colormap = matplotlib.colormaps[cmap]
    return [colormap(i / max(n - 1, 1) * 0.9) for i in range(n)]


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] = FIGSIZE,
    sharex: bool | str = False,
    sharey: bool | str = False,
    **subplot_kw: Any,
) -> tuple[Figure, Any]:
    """A pyplot-free figure with a grid of axes, each cycling through :data:`SERIES_COLORS`.

    Returns ``(figure, axes)`` where ``axes`` is one Axes for a 1 x 1 grid and a numpy array of
    Axes otherwise (as ``pyplot.subplots`` squeezes). ``subplot_kw`` goes to every axes (e.g.
    ``projection``).
    """
    fig = Figure(figsize=figsize)
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, subplot_kw=subplot_kw or None)
    for ax in _flat(axes):
        ax.set_prop_cycle(color=list(SERIES_COLORS))
    return fig, axes


def finish(
    fig: Figure,
    ax_or_axes: Any,
    path: Path | str,
    *,
    title: str | None = None,
    legend_loc: str | None = "best",
    dpi: int = DPI,
    legend_kw: dict[str, Any] | None = None,
) -> Path:
    """Title, legend and tight layout; save ``fig`` as a PNG at ``path`` (folders created).

    With one Axes the title goes above it and the legend inside it. With several (a sequence or
    array) the title becomes the figure's suptitle and the legend goes into the first axes that
    has labelled artists. ``legend_loc=None`` draws no legend; ``legend_kw`` is passed on to
    ``Axes.legend`` (e.g. ``bbox_to_anchor``, ``title``; font size 8 unless given). Returns the
    path as a :class:`Path`.
    """
    path = Path(path)
    axes = _flat(ax_or_axes)
    single = isinstance(ax_or_axes, Axes)
    if title:
        if single:
            ax_or_axes.set_title(title, fontsize=TITLE_SIZE)
        else:
            fig.suptitle(title, fontsize=TITLE_SIZE)
    if legend_loc is not None:
        labelled = [ax for ax in axes if ax.get_legend_handles_labels()[1]]
        if labelled:
            labelled[0].legend(loc=legend_loc, **{"fontsize": LEGEND_SIZE, **(legend_kw or {})})
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _flat(ax_or_axes: Any) -> list[Axes]:
    """Every Axes of one Axes, a sequence or a numpy array of them."""
    if isinstance(ax_or_axes, Axes):
        return [ax_or_axes]
    if isinstance(ax_or_axes, np.ndarray):
        return list(ax_or_axes.flat)
    if isinstance(ax_or_axes, Iterable):
        return list(ax_or_axes)
    raise TypeError(f"expected an Axes or a collection of Axes, got {type(ax_or_axes).__name__}")


__all__ = [
    "ACCURACY_COLOR",
    "B_COLORS",
    "CLASS_COLORS",
    "CONTINGENCY_COLORS",
    "DPI",
    "FIGSIZE",
    "HIGHLIGHT_COLOR",
    "LOSS_COLOR",
    "NEUTRAL",
    "OKABE_ITO",
    "ROLE_COLORS",
    "SERIES_COLORS",
    "finish",
    "new_figure",
    "ordered_colors",
    "series_color",
]
