"""The report as a static site: an index of every run in a store, one page per run, a verdict.

``build_site(store, out)`` writes::

    out/index.html             every run: experiment, hash, dates, version, status, runtime, finding
    out/verdict.html           the paper's claims and what each run says about them
    out/runs/<hash>/index.html one page per run, its figures and summary.csv beside it
    out/theory/...             the symmetry-count figure the verdict page shows
    out/style.css              the one stylesheet (no CDN, no script: the site works from file://)

Pages are rendered with Jinja2 from the templates in ``report/templates``; all links are relative.
The run page (:func:`run_view`, :func:`write_run_page`) is also what ``escapelab run`` writes
into the run's own folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from escapelab import __version__
from escapelab.config import build, to_dict
from escapelab.experiments import get_experiment
from escapelab.report import provenance
from escapelab.report.columns import column, column_label, format_cell
from escapelab.report.findings import findings, symmetry_counts
from escapelab.report.landscape_views import LANDSCAPE_EXPERIMENTS, stored_landscape_figures
from escapelab.report.story import QUESTIONS, caption, method
from escapelab.report.tables import columns, markdown_table
from escapelab.report.verdict import weigh
from escapelab.runner.store import ExperimentRow, Store

STYLESHEET = "style.css"


@dataclass(frozen=True)
class Table:
    """One HTML table: a title, its columns (key, header, tooltip) and its rows; every row is
    ``(index into the summary, [(key, text, is_number), ...])`` with one cell per column."""

    title: str
    columns: list[tuple[str, str, str]]
    rows: list[tuple[int, list[tuple[str, str, bool]]]]


@dataclass
class RunView:
    """Everything a run page shows, computed from the store."""

    name: str
    hash: str
    description: str
    question: str
    method: list[str]
    findings: list[str]
    figures: list[tuple[str, str]]
    tables: list[Table]
    spec_json: str
    created: str
    finished: str
    version: str
    status: str
    tasks_done: int
    tasks_total: int
    runtime: str
    spec: dict[str, Any] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)

    @property
    def headline(self) -> str:
        return self.findings[0] if self.findings else ""


def _date(stamp: float | None) -> str:
    if stamp is None:
        return "–"
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def duration(seconds: float) -> str:
    """``4 min 32 s``, ``1 h 02 min``, ``0.8 s``: a wall time for a reader."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _group_title(rows: list[dict[str, Any]]) -> str:
    """A table's title from what its rows share: their ticket kind, or pooled vs per teacher."""
    first = rows[0]
    if "ticket_kind" in first:
        return f"{first['ticket_kind'].capitalize()}-level tickets"
    if first.get("teacher") == "pooled":
        return "Pooled over teachers"
    if "teacher" in first:
        return "Per teacher"
    return "Summary"


def _cell(key: str, value: Any) -> tuple[str, str, bool]:
    """(key, text, is_number) of one table cell; numbers align right, text left."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return key, format_cell(key, value), number


def tables(summary: list[dict[str, Any]]) -> list[Table]:
    """The summary as tables, one per set of keys (rows of different kinds, e.g. neuron- and
    weight-level tickets, get separate tables), every cell under the header of its own key."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, row in enumerate(summary):
        groups.setdefault(tuple(row), []).append(i)
    out = []
    for indices in groups.values():
        rows = [summary[i] for i in indices]
        keys = columns(rows)
        out.append(
            Table(
                _group_title(rows) if len(groups) > 1 else "Summary",
                [(k, column_label(k), column(k).title) for k in keys],
                [(i, [_cell(k, summary[i].get(k)) for k in keys]) for i in indices],
            )
        )
    return out


def run_status(row: ExperimentRow, store: Store) -> tuple[str, int, int]:
    """(status, tasks done, tasks planned): ``complete`` when every planned seed is stored,
    ``partial`` otherwise, ``unbuildable`` when the stored spec no longer builds."""
    from escapelab.runner.sweep import uncovered_tasks

    exp = get_experiment(row.name)
    try:
        spec = build(exp.spec_type, row.spec)
    except ValueError:
        return "unbuildable", row.tasks_done, row.tasks_done
    planned = exp.tasks(spec)
    left, skipped = uncovered_tasks(planned, store.done_keys(row.hash))
    return ("complete" if not left else "partial"), skipped, len(planned)


def run_view(store: Store, row: ExperimentRow, figure_dir: Path) -> RunView:
    """A run's page data; its figures are drawn into ``figure_dir`` (created), whose file
    names the page links to."""
    exp = get_experiment(row.name)
    spec = build(exp.spec_type, row.spec)
    plain = to_dict(spec)
    records = store.records(row.hash)
    summary = exp.summarize(spec, records) if records else []
    figure_dir.mkdir(parents=True, exist_ok=True)
    paths = exp.figures(spec, records, figure_dir) if records else []
    if row.name in LANDSCAPE_EXPERIMENTS:
        paths += stored_landscape_figures(store, row.name, row.hash, spec, figure_dir)
    log = store.task_log(row.hash)
    status, done, total = run_status(row, store)
    versions = sorted({row.version, *(v for *_, v in log)})
    return RunView(
        name=row.name,
        hash=row.hash,
        description=exp.description,
        question=QUESTIONS.get(row.name, exp.description),
        method=method(row.name, plain),
        findings=findings(row.name, summary, plain) if summary else ["No task has finished yet."],
        figures=[(p.name, caption(p.name)) for p in paths],
        tables=tables(summary),
        spec_json=json.dumps(plain, indent=2),
        created=_date(row.created),
        finished=_date(log[-1][2]) if log else "–",
        version=", ".join(versions),
        status=status,
        tasks_done=done,
        tasks_total=total,
        runtime=duration(sum(wall for _, wall, _, _ in log)),
        spec=plain,
        provenance=provenance.read(store.root / row.hash),
        summary=summary,
    )


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("escapelab.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _write(path: Path, template: str, **context: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    built = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = _environment().get_template(template).render(version=__version__, built=built, **context)
    path.write_text(page)
    return path


def copy_stylesheet(out_dir: Path) -> Path:
    """Copy the stylesheet into ``out_dir``; the pages link to it by a relative path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source = resources.files("escapelab.report").joinpath("templates", STYLESHEET)
    target = out_dir / STYLESHEET
    target.write_text(source.read_text())
    return target


def write_summary_files(out_dir: Path, title: str, spec_hash: str, rows: list[dict]) -> None:
    """summary.csv (every key a column) and summary.md beside a run page."""
    if rows:
        with (out_dir / "summary.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns(rows))
            writer.writeheader()
            writer.writerows(rows)
    (out_dir / "summary.md").write_text(
        f"# {title}\n\nspec hash `{spec_hash}`\n\n" + markdown_table(rows)
    )


def write_run_page(view: RunView, out_dir: Path, root: str | None) -> Path:
    """The run page ``out_dir``/``index.html`` (or report.html when ``root`` is None, a page
    outside a site), with summary files beside; ``root`` is the relative path to the site's
    top (for the stylesheet and the navigation)."""
    write_summary_files(out_dir, f"{view.name}: {view.description}", view.hash, view.summary)
    (out_dir / "spec.json").write_text(view.spec_json + "\n")
    if root is None:
        copy_stylesheet(out_dir)
    return _write(
        out_dir / ("index.html" if root is not None else "report.html"),
        "run.html",
        run=view,
        root=root or ".",
        in_site=root is not None,
    )


def build_site(store: str | Path, out: str | Path) -> Path:
    """Write the whole site for ``store`` into ``out``; returns the index page's path.

    LookupError when there is no store at ``store``."""
    db = Store(store)
    rows = db.experiments()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_stylesheet(out)
    views = []
    for row in rows:
        run_dir = out / "runs" / row.hash
        view = run_view(db, row, run_dir)
        write_run_page(view, run_dir, "../..")
        views.append(view)
    verdicts = weigh([(v.name, v.hash, v.summary, v.spec) for v in views])
    theory = _theory(views, out / "theory")
    _write(out / "verdict.html", "verdict.html", verdicts=verdicts, theory=theory, root=".")
    return _write(
        out / "index.html", "index.html", runs=views, store=str(db.root.resolve()), root="."
    )


def _theory(views: list[RunView], out_dir: Path) -> dict[str, Any]:
    """The symmetry counts (Şimşek et al. 2021) for the teacher widths in the store (r* = 2..5
    when none), as the verdict page's theory panel: the figure, each crossover width and the
    finding in words (:func:`escapelab.report.findings.symmetry_counts`)."""
    from escapelab.report.counts import plot_symmetry_counts
    from escapelab.theory.symmetry_counts import counts_table

    r_stars = sorted({v.spec["teacher"]["width"] for v in views if "teacher" in v.spec})
    r_stars = [r for r in r_stars if r >= 2][:6] or [2, 3, 4, 5]
    table = counts_table(r_stars, max(12, 4 * max(r_stars)))
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = plot_symmetry_counts(table.r_stars, table.widths, out_dir / "symmetry_counts.png")
    return {
        "figure": f"theory/{figure.name}",
        "caption": caption(figure.name),
        "crossovers": [(r, table.crossovers[r]) for r in table.r_stars],
        "finding": symmetry_counts(table.crossovers),
    }


__all__ = [
    "RunView",
    "Table",
    "build_site",
    "copy_stylesheet",
    "duration",
    "run_status",
    "run_view",
    "tables",
    "write_run_page",
    "write_summary_files",
]
