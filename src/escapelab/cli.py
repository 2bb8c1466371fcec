"""The ``escapelab`` command line: a thin layer over :mod:`escapelab.runner`.

User mistakes (unknown experiment or key, wrong type, out-of-range value, unreadable config, unknown
hash) print one line ``error: <field>: <what is allowed>`` and exit with code 2, before anything is
written to the store.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from escapelab.config import (
    SpecError,
    load_config_file,
    merge,
    parse_assignments,
    parse_sequence,
    science,
)
from escapelab.experiments import EXPERIMENTS, get_experiment
from escapelab.report.tables import markdown_table
from escapelab.runner.store import Store, export_records
from escapelab.runner.sweep import prepare, run, write_outputs

F = TypeVar("F", bound=Callable[..., Any])

store_option = click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("escapelab-runs"),
    show_default=True,
    help="Directory of the results store.",
)


def user_errors(fn: F) -> F:
    """Turn SpecError / LookupError / ValueError from the API into a one-line error, exit 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SpecError, LookupError, ValueError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _run_and_report(
    name: str,
    spec: dict[str, Any],
    store: Path,
    workers: int,
    device: str,
    out: Path | None,
    progress: bool,
) -> None:
    outcome = run(name, spec, store=store, workers=workers, device=device, progress=progress)
    report = write_outputs(outcome, out)
    click.echo(
        f"{name} {outcome.spec_hash}: {outcome.tasks_run} task(s) run, "
        f"{outcome.tasks_skipped} already stored, {len(outcome.records)} records"
    )
    click.echo(markdown_table(outcome.summary))
    click.echo(f"report: {report}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="escapelab")
def main() -> None:
    """escapelab: lottery tickets or escape dimensions, settled by measurement."""


@main.command("run")
@click.argument("experiment", type=click.Choice(sorted(EXPERIMENTS)), metavar="EXPERIMENT")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON or TOML file with the spec (nested tables).",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one spec field, e.g. --set teacher.width=4 --set student.widths=4..12; "
    "every key, its default and allowed values: escapelab describe EXPERIMENT",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Parallel local processes.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write figures and tables (default: <store>/<hash>/).",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@store_option
@user_errors
def run_cmd(
    experiment: str,
    config_file: Path | None,
    assignments: tuple[str, ...],
    workers: int,
    device: str,
    out: Path | None,
    no_progress: bool,
    store: Path,
) -> None:
    """Run EXPERIMENT (resuming what the store already holds) and write its report."""
    data = load_config_file(config_file) if config_file else {}
    data = merge(data, parse_assignments(assignments))
    prepare(experiment, data)  # validate before touching the store
    _run_and_report(experiment, data, store, workers, device, out, not no_progress)


@main.command()
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("escapelab-report"),
    show_default=True,
)
@store_option
@user_errors
def demo(workers: int, device: str, out: Path, store: Path) -> None:
    """The headline width sweep over 8 teachers (about 5 min on 2 cores); report in --out."""
    _run_and_report("width-sweep", {}, store, workers, device, out, True)


@main.command("list")
@store_option
@user_errors
def list_cmd(store: Path) -> None:
    """List the experiments in the store: hash, name, dates, status, tasks, runtime."""
    from escapelab.report.site import duration, run_status

    db = Store(store)
    rows = []
    for e in db.experiments():
        status, done, total = run_status(e, db)
        log = db.task_log(e.hash)
        rows.append(
            {
                "hash": e.hash,
                "experiment": e.name,
                "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)),
                "status": status,
                "tasks": f"{done}/{total}",
                "runtime": duration(sum(wall for _, wall, _, _ in log)),
                "version": e.version,
            }
        )
    click.echo(markdown_table(rows))


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("escapelab-report"),
    show_default=True,
    help="Folder of the site (created; its pages are overwritten).",
)
@store_option
@user_errors
def report(out: Path, store: Path) -> None:
    """Write a static site for the store: index of runs, one page per run, verdict page.

    It works offline from file:// (no server, no CDN); open OUT/index.html.
    """
    from escapelab.report.site import build_site

    index = build_site(store, out)
    click.echo(f"report: {index}\nverdict: {index.parent / 'verdict.html'}")


@main.command()
@click.argument("experiment", type=click.Choice(sorted(EXPERIMENTS)), metavar="EXPERIMENT")
@user_errors
def describe(experiment: str) -> None:
    """Every key of EXPERIMENT's spec with its default and allowed values (set with --set)."""
    from escapelab.spec_docs import describe_spec

    exp = get_experiment(experiment)
    click.echo(f"{experiment}: {exp.description}\n")
    click.echo(markdown_table(describe_spec(exp.spec_type)))


@main.command()
@click.argument("experiment", type=click.Choice(sorted(EXPERIMENTS)), metavar="EXPERIMENT")
@user_errors
def defaults(experiment: str) -> None:
    """Print EXPERIMENT's complete default spec as TOML (edit it, then run with --config)."""
    from escapelab.spec_docs import defaults_toml

    click.echo(defaults_toml(experiment, get_experiment(experiment).spec_type), nl=False)


@main.command()
@click.argument("hash_prefix")
@store_option
@user_errors
def show(hash_prefix: str, store: Path) -> None:
    """Show an experiment's spec and summary table (HASH_PREFIX: its hash or an old one)."""
    db = Store(store)
    row = db.find(hash_prefix)
    exp, spec, _ = prepare(row.name, row.spec)
    click.echo(f"{row.name} {row.hash} (escapelab {row.version}, {row.tasks_done} tasks done)")
    click.echo(f"named by (its fields that differ from the defaults): {json.dumps(science(spec))}")
    click.echo(json.dumps(row.spec, indent=2))
    click.echo(markdown_table(exp.summarize(spec, db.records(row.hash))))


@main.command()
@click.argument("hash_prefix")
@click.option("--member", type=int, help="The bad local minimum to look at (default: the first).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the figures (default: <store>/<hash>/landscape/).",
)
@store_option
@user_errors
def landscape(hash_prefix: str, member: int | None, out: Path | None, store: Path) -> None:
    """Hessian spectra, escape-direction slice and interpolation around a stored bad minimum
    of a width-sweep or minima-census run (HASH_PREFIX)."""
    from escapelab.report.landscape_views import LANDSCAPE_EXPERIMENTS, landscape_figures

    db = Store(store)
    row = db.find(hash_prefix)
    if row.name not in LANDSCAPE_EXPERIMENTS:
        raise SpecError(
            "hash",
            f"{row.hash} is a {row.name} run; landscape figures need the stored endpoints of "
            + " or ".join(LANDSCAPE_EXPERIMENTS),
        )
    _, spec, _ = prepare(row.name, row.spec)
    paths = landscape_figures(
        spec, db.records(row.hash), out or db.root / row.hash / "landscape", member
    )
    if not paths:
        raise LookupError(f"{row.name} {row.hash} stored no bad local minimum to look at")
    click.echo("\n".join(f"figure: {p}" for p in paths))


@main.command()
@click.argument("hash_prefix")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file; .csv or .parquet (default: <hash>.csv).",
)
@store_option
@user_errors
def export(hash_prefix: str, out: Path | None, store: Path) -> None:
    """Export every record of an experiment to CSV (or Parquet with pyarrow installed)."""
    db = Store(store)
    row = db.find(hash_prefix)
    target = out or Path(f"{row.hash}.csv")
    if target.suffix.lower() not in (".csv", ".parquet"):
        raise SpecError("--out", f"must end in .csv or .parquet, got {target.name!r}")
    path = export_records(db.records(row.hash), target)
    click.echo(f"wrote {path}")


@main.command()
@click.option(
    "--r-star",
    "r_stars",
    default="2..6",
    show_default=True,
    help="Teacher widths: a list 2,3,4 or a range 2..6.",
)
@click.option("--max-width", type=click.IntRange(min=2), default=30, show_default=True)
@click.option(
    "--duplication-only",
    is_flag=True,
    help="Count for G only the subspaces made by duplicating units (no zero-output units).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("escapelab-report"),
    show_default=True,
)
@user_errors
def counts(r_stars: str, max_width: int, duplication_only: bool, out: Path) -> None:
    """Symmetry-induced subspace counts T(r*, m) and G(r, m): table, crossover and figure."""
    from escapelab.report.counts import write_symmetry_counts
    from escapelab.theory.symmetry_counts import counts_table

    teachers = [int(v) for v in parse_sequence(r_stars, "--r-star")]
    try:
        table = counts_table(teachers, max_width, zero_output=not duplication_only)
    except SpecError as err:  # name the option, not the Python argument
        option = {"r_stars": "--r-star", "max_width": "--max-width"}.get(err.field, err.field)
        raise SpecError(option, err.message) from None
    table_path, figure = write_symmetry_counts(table, out)
    for r_star in table.r_stars:
        click.echo(
            f"r* = {r_star}: saddle subspaces outnumber global-minimum subspaces "
            f"up to m = {table.crossovers[r_star] - 1}"
        )
    click.echo(f"table: {table_path}\nfigure: {figure}")


__all__ = ["get_experiment", "main"]
if __name__ == "__main__":
    main()
