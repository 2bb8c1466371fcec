"""Figure and Markdown table of the symmetry-induced subspace counts (experiment E5, theory).

The counting itself is in :mod:`escapelab.theory.symmetry_counts`, which imports no plotting;
this module turns its results into files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from escapelab.report.findings import count_check_findings
from escapelab.report.style import finish, new_figure, ordered_colors
from escapelab.report.tables import markdown_table
from escapelab.theory.symmetry_counts import CountsTable, crossover_width, symmetry_table

TABLE_NAME = "symmetry_counts.md"
FIGURE_NAME = "symmetry_counts.png"
CHECK_NAME = "count_check.md"


def plot_symmetry_counts(
    r_stars: Sequence[int],
    widths: Sequence[int],
    path: Path | str,
) -> Path:
    """Plot sum_{r<r*} G(r, m) / T(r*, m) against m (log y), one curve per r*; write a PNG.

    Each curve uses the widths >= r*; a star marks the crossover width when it lies in the range.
    Curves are coloured in the order of ``r_stars`` along a sequential map, since r* is ordered.
    """
    fig, ax = new_figure(figsize=(6.8, 4.4))
    for r_star, color in zip(r_stars, ordered_colors(len(r_stars)), strict=True):
        rows = symmetry_table(r_star, [m for m in widths if m >= r_star])
        m_cross = crossover_width(r_star)
        ax.plot(
            [row["m"] for row in rows],
            [row["ratio"] for row in rows],
            "o-",
            ms=3.5,
            color=color,
            label=f"$r^*={r_star}$, crossover $m={m_cross}$",
        )
        cross = [row for row in rows if row["m"] == m_cross]
        if cross:
            ax.plot(m_cross, cross[0]["ratio"], "*", ms=14, color=color, mec="k", zorder=3)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.text(0.98, 0.97, "saddle subspaces dominate", transform=ax.transAxes, ha="right", va="top")
    ax.text(0.02, 0.03, "global-minimum subspaces dominate", transform=ax.transAxes, va="bottom")
    ax.set_xlabel("student width m")
    ax.set_ylabel(r"saddle / global subspaces  $\Sigma_{r<r^*} G(r,m)\,/\,T(r^*,m)$")
    return finish(
        fig,
        ax,
        path,
        title="Symmetry-induced subspace counts (Şimşek et al. 2021)\n"
        "constructions measured to stay critical",
        legend_loc="lower left",
        dpi=150,
        legend_kw={"bbox_to_anchor": (0.0, 0.08), "title": "star: crossover"},
    )


def write_symmetry_counts(counts: CountsTable, out_dir: Path | str) -> tuple[Path, Path]:
    """Write ``counts`` into ``out_dir`` (created): the rows as a Markdown table
    (symmetry_counts.md) and the ratio figure over ``counts.widths`` (symmetry_counts.png).

    Returns ``(table_path, figure_path)``; these are the files of ``escapelab counts``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / TABLE_NAME
    table.write_text(markdown_table(counts.rows))
    figure = plot_symmetry_counts(counts.r_stars, counts.widths, out_dir / FIGURE_NAME)
    return table, figure


def write_count_check(
    rows: list[dict[str, Any]], verdicts: list[dict[str, Any]], out_dir: Path | str
) -> Path:
    """Write the measurement of :func:`escapelab.landscape.critical_subspaces.check_constructions`
    into ``out_dir`` (created) as count_check.md: its findings, the verdict per construction and
    kind of critical point, then every measured case. Returns the path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CHECK_NAME
    text = "\n".join(count_check_findings(verdicts))
    text += "\n\n" + markdown_table(verdicts) + "\n" + markdown_table(rows)
    path.write_text(text)
    return path


__all__ = [
    "CHECK_NAME",
    "FIGURE_NAME",
    "TABLE_NAME",
    "plot_symmetry_counts",
    "write_count_check",
    "write_symmetry_counts",
]
