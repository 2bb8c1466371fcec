"""Summary tables as Markdown; the HTML tables of the report are in :mod:`escapelab.report.site`."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of ``rows`` in first-seen order (rows of different kinds may differ)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-style Markdown table of ``rows`` (columns in first-seen order, blanks where a
    row lacks one)."""
    if not rows:
        return "(no rows)\n"
    cols = columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
