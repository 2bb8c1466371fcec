"""Summary tables as Markdown, CSV and a small self-contained HTML report."""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
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


def write_report(
    out_dir: Path,
    title: str,
    spec: dict[str, Any],
    spec_hash: str,
    rows: list[dict[str, Any]],
    figures: list[Path],
) -> Path:
    """Write summary.csv, summary.md and report.html (figures embedded) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if rows:
        with (out_dir / "summary.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns(rows))
            writer.writeheader()
            writer.writerows(rows)
    (out_dir / "summary.md").write_text(
        f"# {title}\n\nspec hash `{spec_hash}`\n\n" + markdown_table(rows)
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (rows[0] if rows else []))
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r.values()) + "</tr>"
        for r in rows
    )
    imgs = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"'
        f' alt="{html.escape(p.stem)}"><figcaption>{html.escape(p.name)}</figcaption></figure>'
        for p in figures
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right}figure{display:inline-block;margin:0 1em 1em 0}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>spec hash <code>{spec_hash}</code></p>"
        f"<table><tr>{head}</tr>{body}</table>{imgs}"
        f"<h2>Spec</h2><pre>{html.escape(json.dumps(spec, indent=2))}</pre></body></html>"
    )
    path = out_dir / "report.html"
    path.write_text(page)
    return path
