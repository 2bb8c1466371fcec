"""Closed-form theory without plotting: multi-start predictions and symmetry subspace counts.

Figures and files of these results are drawn by :mod:`escapelab.report` (e.g.
:func:`escapelab.report.counts.write_symmetry_counts`).
"""

from escapelab.theory.symmetry_counts import (
    CountsTable,
    count_critical_subspaces,
    count_global_subspaces,
    count_saddle_subspaces,
    counts_table,
    crossover_width,
    symmetry_table,
)

__all__ = [
    "CountsTable",
    "count_critical_subspaces",
    "count_global_subspaces",
    "count_saddle_subspaces",
    "counts_table",
    "crossover_width",
    "symmetry_table",
]
