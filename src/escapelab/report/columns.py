"""Readable column names, units and number formats for the summary tables of the report.

A summary row is keyed by short field names (``p_global``, ``ci_low``, ``test_acc_es``); a reader
needs "P(global minimum)" and "95 % CI low". :func:`column_label` gives that label (with its unit
in brackets) and :func:`format_cell` the text of one value, in the unit the figures use: test
accuracies and densities in per cent (as the lottery figure draws them), shares and probabilities
as fractions between 0 and 1 (as the success and contingency figures draw them). A key without an
entry keeps its name, with underscores as spaces, so a new summary field is shown, never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Column:
    """How one summary field is shown: ``label`` (the header), ``unit`` (after it in brackets,
    empty for none), ``scale`` (values are multiplied by it, 100 for per cent) and ``title``
    (a longer explanation, shown as the header's tooltip)."""

    label: str
    unit: str = ""
    scale: float = 1.0
    title: str = ""


_SHARE = "share"
_PERCENT = "%"

COLUMNS: dict[str, Column] = {
    "teacher": Column("teacher", title="teacher seed, or 'pooled' over all teachers"),
    "width": Column("width m", title="hidden units of the student"),
    "source_width": Column("source width r", title="width of the bad minima before embedding"),
    "n": Column("n", title="students (or runs) in this row"),
    "teachers": Column("teachers"),
    "p_global": Column("P(global min)", _SHARE, title="share that reached a global minimum"),
    "ci_low": Column("95 % CI low", _SHARE, title="lower end of the 95 % interval"),
    "ci_high": Column("95 % CI high", _SHARE, title="upper end of the 95 % interval"),
    "p_global_min": Column("lowest teacher P(global)", _SHARE),
    "p_global_max": Column("highest teacher P(global)", _SHARE),
    "p_bad_min": Column("P(bad local min)", _SHARE),
    "bad_ci_low": Column("bad-min CI low", _SHARE),
    "bad_ci_high": Column("bad-min CI high", _SHARE),
    "p_not_converged": Column("out of budget", _SHARE, title="share not converged"),
    "global_min": Column("global minima"),
    "local_min": Column("bad local minima"),
    "saddle": Column("saddles"),
    "flat_channel": Column("flat channels"),
    "not_converged": Column("not converged"),
    "diverged": Column("diverged"),
    "pred_subsets": Column("lottery prediction, overlapping", _SHARE, title="1 - (1 - p)^C(m, r*)"),
    "pred_disjoint": Column("lottery prediction, disjoint", _SHARE, title="1 - (1 - p)^(m // r*)"),
    "subsets_per_member": Column("sub-networks per student"),
    "subsets_sampled": Column("sub-networks sampled"),
    "p_full_success": Column("P(full network succeeds)", _SHARE),
    "p_ticket_exists": Column("P(winning ticket at init)", _SHARE),
    "full_bad_min": Column("full: bad minima"),
    "full_not_converged": Column("full: out of budget"),
    "success_with_ticket": Column("success, ticket"),
    "success_without_ticket": Column("success, no ticket"),
    "failure_with_ticket": Column("failure, ticket"),
    "failure_without_ticket": Column("failure, no ticket"),
    "sources": Column("sources"),
    "bad_minima": Column("bad minima"),
    "sources_not_converged": Column("sources out of budget"),
    "embedding": Column("embedding"),
    "gamma": Column("γ", title="split parameter"),
    "runs": Column("runs"),
    "saddle_measured": Column("saddles (Hessian)", _SHARE),
    "b_agrees": Column("B predicts right", _SHARE, title="share where B's class matches"),
    "escape_rate": Column("escape rate", _SHARE),
    "mean_final_loss": Column("mean final loss"),
    "seeds": Column("seeds"),
    "other_endpoints": Column("other endpoints"),
    "distinct_bad_minima": Column("distinct bad minima"),
    "minima_losses": Column("their losses"),
    "basin_shares": Column("their basins", _SHARE, title="share of seeds ending in each"),
    "critical_points_found": Column("critical points found"),
    "index_counts": Column("Hessian index: count"),
    "distinct_global_pieces": Column("distinct global pieces", title="modulo permutations"),
    "piece_labels": Column("piece labels", title="distinct labels over all teachers"),
    "piece_orbits": Column("possible pieces", title="T's pieces modulo permutations"),
    "T": Column("T(r*, m)", title="labelled global-minimum pieces"),
    "G": Column("G", title="sum over r < r* of G(r, m)"),
    "bad_good_ratio": Column("bad / good", title="distinct bad minima / distinct global pieces"),
    "p_index_zero": Column("P(index 0)", _SHARE),
    "slope": Column("slope b", title="d log P(index 0) / d P"),
    "dataset": Column("dataset"),
    "prune_level": Column("pruning round"),
    "role": Column("network"),
    "density": Column("weights kept", _PERCENT, 100.0),
    "test_acc": Column("test accuracy, end", _PERCENT, 100.0),
    "test_acc_es": Column("test accuracy", _PERCENT, 100.0, "at early stopping"),
    "test_acc_es_std": Column("± std", _PERCENT, 100.0),
    "test_acc_es_min": Column("min", _PERCENT, 100.0),
    "test_acc_es_max": Column("max", _PERCENT, 100.0),
    "test_loss_es": Column("test loss", title="at early stopping"),
    "test_loss_es_std": Column("± std"),
    "test_loss_es_min": Column("min"),
    "test_loss_es_max": Column("max"),
    "es_step": Column("early-stopping step"),
    "es_step_std": Column("± std"),
    "es_step_min": Column("min"),
    "es_step_max": Column("max"),
    "sign_flip": Column("signs flipped", _SHARE),
    "ticket_kind": Column("ticket"),
    "problem": Column("problem"),
    "perturbation": Column("kind of perturbation"),
    "size": Column("size", title="alpha or sigma"),
    "label": Column("perturbation"),
    "n_members": Column("students"),
    "n_no_ticket": Column("without ticket"),
    "n_tickets": Column("tickets"),
    "failures": Column("failures"),
    "failure_rate": Column("failure rate", _SHARE),
    "failure_kinds": Column("failures ended as"),
    "n_reference_success": Column("unperturbed successes"),
    "broken": Column("broken"),
    "diff_method": Column("difference interval", title="paired per ticket, or independent"),
    "n_pairs": Column("tickets paired", title="decided under both the dose and the floor"),
    "broken_pairs": Column("failed under the dose only"),
    "mended_pairs": Column("failed under the floor only"),
    "broken_rate": Column("broken rate", _SHARE, title="successes turned into failures"),
    "broken_ci_low": Column("broken CI low", _SHARE),
    "broken_ci_high": Column("broken CI high", _SHARE),
    "failures_all_tickets": Column("failures, all tickets"),
    "ticket_alone_acc": Column("ticket alone: accuracy", _PERCENT, 100.0),
    "ticket_alone_global": Column("ticket alone: global min", _SHARE),
    "mean_overlap": Column("overlap with ticket", _SHARE),
    "chance_overlap": Column("chance overlap", _SHARE),
}
"""Every summary field of the six experiments, by key."""


def column(key: str) -> Column:
    """How ``key`` is shown; a key without an entry is labelled by its name."""
    return COLUMNS.get(key) or Column(key.replace("_", " "))


def column_label(key: str) -> str:
    """The header of ``key``: its label, and its unit in brackets when it has one."""
    col = column(key)
    return f"{col.label} ({col.unit})" if col.unit else col.label


def _number(value: float) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.3g}"
    return f"{value:.2e}"


def format_value(value: Any, scale: float = 1.0) -> str:
    """``value`` as table text: numbers to 3 significant digits (times ``scale``), nan as a
    dash, lists and dicts element by element, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value) if scale == 1.0 else _number(value * scale)
    if isinstance(value, float):
        return _number(value * scale)
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, scale) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_value(v, scale)}" for k, v in value.items())
    return str(value)


def format_cell(key: str, value: Any) -> str:
    """The text of ``value`` under the header of ``key`` (in that column's unit)."""
    return format_value(value, column(key).scale)


__all__ = ["COLUMNS", "Column", "column", "column_label", "format_cell", "format_value"]
