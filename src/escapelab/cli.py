"""The ``escapelab`` command line: a thin layer over :mod:`escapelab.runner`.

One error path (:class:`EscapelabCLI`): every failure a user can act on prints one line and
exits with a documented code, never a traceback (``escapelab --debug ...`` or
``ESCAPELAB_DEBUG=1`` shows it):

* 2 -- bad input (unknown experiment, key or option, wrong type, out-of-range or non-finite
  value, unreadable config, unknown hash, a spec too large for the memory): ``error: <field>:
  <what is allowed>``, before anything is written to the store;
* 3 -- a fault of the environment (read-only or full disk, permissions, a damaged store, a
  missing optional package, out of memory): ``error: <path or thing>: <problem>; <what to do>``;
* 4 -- the run ended, but some of its tasks raised: each is logged with its error in the
  store (``escapelab show``), the report covers the rest, and rerunning the command retries
  only the failed tasks;
* 130 / 143 -- stopped by Ctrl-C / SIGTERM: what was saved and how to resume;
* 1 -- a bug in escapelab (an unexpected exception), with a request to rerun with --debug.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from escapelab.atomic import staged_dir
from escapelab.config import (
    SpecError,
    load_config_file,
    merge,
    parse_assignments,
    parse_sequence,
    science,
)
from escapelab.errors import (
    EXIT_ENVIRONMENT,
    EXIT_INTERNAL,
    EXIT_TASKS_FAILED,
    one_line,
    user_message,
)
from escapelab.experiments import EXPERIMENTS, get_experiment
from escapelab.landscape.critical_subspaces import CHECK_ACTIVATIONS
from escapelab.presets import available, load_preset, preset_spec
from escapelab.report.tables import markdown_table
from escapelab.runner.budget import format_size, parse_size
from escapelab.runner.executors import DaskCluster, SlurmConfig
from escapelab.runner.repair import check_store, recover_store
from escapelab.runner.store import Store, export_records
from escapelab.runner.sweep import EXECUTORS, open_failures, plan, prepare, run, write_outputs

# bounds of `escapelab counts`: its work grows as max_width^3 (2 s at 200 on one core)
MAX_COUNT_WIDTH = 200
MAX_COUNT_R_STAR = 50
# bound of `escapelab counts --verify`: about 15 s per teacher
MAX_CHECK_TEACHERS = 20

store_option = click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("escapelab-runs"),
    show_default=True,
    help="Directory of the results store.",
)


class EscapelabCLI(click.Group):
    """The command group, with the one error path of the module docstring."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:  # a caller that handles errors itself
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        debug = _debug_requested(argv)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.exceptions.Abort as err:
            code = _report(err.__cause__ or KeyboardInterrupt(), debug)
        except click.ClickException as err:
            _show_traceback(debug)
            click.echo(f"error: {one_line(err.format_message())}", err=True)
            code = err.exit_code
        except Exception as err:
            code = _report(err, debug)
        sys.exit(code or 0)


def _debug_requested(argv: list[str]) -> bool:
    """--debug before the command name, or ESCAPELAB_DEBUG set to a non-empty value but 0."""
    leading = []
    for arg in argv:
        if not arg.startswith("-"):
            break
        leading.append(arg)
    return "--debug" in leading or os.environ.get("ESCAPELAB_DEBUG", "0") not in ("", "0")


def _show_traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc()


def _report(err: BaseException, debug: bool) -> int:
    """Print the one line for ``err`` and return its exit code (1 for a bug)."""
    _show_traceback(debug)
    known = user_message(err)
    if known is None:
        click.echo(
            f"internal error: {type(err).__name__}: {one_line(str(err))} (a bug in escapelab; "
            "rerun with `escapelab --debug ...` and report the traceback)",
            err=True,
        )
        return EXIT_INTERNAL
    code, message = known
    click.echo(one_line(message), err=True)
    return code


max_memory_option = click.option(
    "--max-memory",
    metavar="SIZE",
    help="Refuse a run whose tasks would need more memory than this (512M, 4G, ...); "
    "default: the memory available now.",
)


def _run_and_report(
    name: str,
    spec: dict[str, Any],
    store: Path,
    workers: int,
    device: str,
    out: Path | None,
    progress: bool,
    max_memory: str | None,
    executor: str | DaskCluster = "local",
) -> None:
    limit = parse_size(max_memory) if max_memory else None
    outcome = run(
        name,
        spec,
        store=store,
        workers=workers,
        device=device,
        progress=progress,
        max_memory=limit,
        executor=executor,
    )
    report = write_outputs(outcome, out)
    shared = (
        f", {outcome.tasks_by_others} run by another process" if outcome.tasks_by_others else ""
    )
    click.echo(
        f"{name} {outcome.spec_hash}: {outcome.tasks_run} task(s) run, "
        f"{outcome.tasks_skipped} already stored{shared}, {len(outcome.records)} records"
    )
    click.echo(markdown_table(outcome.summary))
    click.echo(f"report: {report}")
    if outcome.failures:
        first = outcome.failures[0]
        click.echo(
            one_line(
                f"error: {len(outcome.failures)} task(s) failed and are not stored (first: "
                f"{first.key}: {first.error}); `escapelab show {outcome.spec_hash[:8]}` lists "
                "them; rerun the same command to retry only those"
            ),
            err=True,
        )
        raise click.exceptions.Exit(EXIT_TASKS_FAILED)


def _cluster(
    executor: str, scheduler: str | None, dask_workers: int | None, slurm: Path | None
) -> str | DaskCluster:
    """The executor the run options name (validated: the Dask options need --executor dask)."""
    if executor != "dask":
        for option, value in (
            ("--scheduler", scheduler),
            ("--dask-workers", dask_workers),
            ("--slurm", slurm),
        ):
            if value is not None:
                raise SpecError(option, "needs --executor dask")
        return executor
    return DaskCluster(
        scheduler=scheduler,
        workers=dask_workers,
        slurm=SlurmConfig.from_file(slurm) if slurm is not None else None,
    )


@click.group(cls=EscapelabCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="escapelab")
@click.option("--debug", is_flag=True, help="Show an error's traceback (or ESCAPELAB_DEBUG=1).")
def main(debug: bool) -> None:
    """escapelab: lottery tickets or escape dimensions, settled by measurement.

    \b
    Exit codes: 0 done; 2 bad input (one line names the field and what is allowed);
    3 a fault of the environment (disk full or read-only, permissions, damaged store,
    missing package, out of memory, a lost Dask scheduler); 4 some tasks raised (each is
    logged with its error; rerun to retry only those); 130 / 143 stopped by Ctrl-C / SIGTERM
    (finished tasks are kept: rerun to resume); 1 a bug (rerun with --debug and report it)."""


@main.command("run")
@click.argument("experiment", type=click.Choice(sorted(EXPERIMENTS)), metavar="EXPERIMENT")
@click.option(
    "--preset",
    metavar="NAME",
    help="Start from a shipped preset of EXPERIMENT (escapelab presets lists them); "
    "--config and --set override it.",
)
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
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="Where tasks run: local processes (--workers) or a Dask cluster (--scheduler, "
    "--dask-workers or --slurm; needs escapelab[dask]).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="With --executor dask: the address of a running Dask scheduler (tcp://HOST:PORT).",
)
@click.option(
    "--dask-workers",
    type=click.IntRange(min=1),
    help="With --executor dask: a Dask LocalCluster of N single-threaded worker processes "
    "(default when no --scheduler or --slurm: one per CPU).",
)
@click.option(
    "--slurm",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="With --executor dask: SLURM jobs through dask-jobqueue, from the [slurm] section of "
    "FILE (cores, memory, walltime, jobs, processes, queue, account, job_extra_directives).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write figures and tables (default: <store>/<hash>/).",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate the spec, the device and the sizes, print the plan; write nothing.",
)
@max_memory_option
@store_option
def run_cmd(
    experiment: str,
    preset: str | None,
    config_file: Path | None,
    assignments: tuple[str, ...],
    workers: int,
    device: str,
    executor: str,
    scheduler: str | None,
    dask_workers: int | None,
    slurm: Path | None,
    out: Path | None,
    no_progress: bool,
    dry_run: bool,
    max_memory: str | None,
    store: Path,
) -> None:
    """Run EXPERIMENT (resuming what the store already holds) and write its report.

    Several processes may run the same spec on one store: they share the tasks. The spec is
    the preset, overridden by the config file, overridden by --set. With --executor dask the
    tasks run on a Dask cluster; this process alone writes the store either way."""
    data = preset_spec(preset, experiment) if preset else {}
    data = merge(data, load_config_file(config_file) if config_file else {})
    data = merge(data, parse_assignments(assignments))
    limit = parse_size(max_memory) if max_memory else None
    cluster = _cluster(executor, scheduler, dask_workers, slurm)
    checked = plan(experiment, data, workers, device, limit, cluster)  # before the store
    if dry_run:
        need = checked.memory
        memory = (
            f"about {format_size(need.bytes)} per task"
            if need
            else "memory per task not estimated for this experiment"
        )
        click.echo(
            f"{experiment} {checked.spec_hash}: {len(checked.tasks)} task(s) on "
            f"{checked.device}; {memory}; nothing written"
        )
        return
    _run_and_report(
        experiment, data, store, workers, device, out, not no_progress, max_memory, cluster
    )


@main.command()
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("escapelab-report"),
    show_default=True,
)
@max_memory_option
@store_option
def demo(workers: int, device: str, out: Path, max_memory: str | None, store: Path) -> None:
    """The headline width sweep over 8 teachers (about 5 min on 2 cores); report in --out.

    The same as `escapelab run width-sweep --preset demo`."""
    demo_preset = load_preset("demo")
    _run_and_report(
        demo_preset.experiment, demo_preset.spec, store, workers, device, out, True, max_memory
    )


@main.command()
def presets() -> None:
    """List the shipped presets: name, experiment, purpose (run: escapelab run EXP --preset N)."""
    rows = []
    for name in available():
        preset = load_preset(name)
        rows.append({"preset": name, "experiment": preset.experiment, "purpose": preset.purpose})
    click.echo(markdown_table(rows))


@main.command()
def kernel() -> None:
    """Build (or load) the fused one-hidden-layer kernel for both precisions and say where it is.

    Run it once per kind of machine (a cluster's login node builds for the login node only:
    the library is compiled for the CPU it runs on). Exits with status 1 when the kernel
    cannot be built; training then still runs, on the slower torch path."""
    import time

    from escapelab.problems import shallow_build

    compiler = shallow_build.find_compiler()
    click.echo(f"compiler: {' '.join(compiler) if compiler else 'none found (set CC)'}")
    failed = False
    for precision in shallow_build.PRECISIONS:
        started = time.perf_counter()
        try:
            library = shallow_build.kernel(precision)
        except shallow_build.KernelUnavailable as error:
            click.echo(f"{precision}: unavailable ({error})")
            failed = True
            continue
        seconds = time.perf_counter() - started
        click.echo(f"{precision}: ready, {seconds:.1f} s ({library.path})")
    if failed:
        raise SystemExit(1)


@main.command("list")
@store_option
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
def report(out: Path, store: Path) -> None:
    """Write a static site for the store: index of runs, one page per run, verdict page.

    It works offline from file:// (no server, no CDN); open OUT/index.html.
    """
    from escapelab.report.site import build_site

    index = build_site(store, out)
    click.echo(f"report: {index}\nverdict: {index.parent / 'verdict.html'}")


@main.command()
@click.argument("experiment", type=click.Choice(sorted(EXPERIMENTS)), metavar="EXPERIMENT")
def describe(experiment: str) -> None:
    """Every key of EXPERIMENT's spec with its default and allowed values (set with --set)."""
    from escapelab.spec_docs import describe_spec

    exp = get_experiment(experiment)
    click.echo(f"{experiment}: {exp.description}\n")
    click.echo(markdown_table(describe_spec(exp.spec_type)))


@main.command()
@click.argument("experiment", type=click.Choice(sorted(EXPERIMENTS)), metavar="EXPERIMENT")
def defaults(experiment: str) -> None:
    """Print EXPERIMENT's complete default spec as TOML (edit it, then run with --config)."""
    from escapelab.spec_docs import defaults_toml

    click.echo(defaults_toml(experiment, get_experiment(experiment).spec_type), nl=False)


@main.command()
@click.argument("hash_prefix")
@store_option
def show(hash_prefix: str, store: Path) -> None:
    """Show an experiment's spec and summary table (HASH_PREFIX: its hash or an old one)."""
    db = Store(store)
    row = db.find(hash_prefix)
    exp, spec, _ = prepare(row.name, row.spec)
    click.echo(f"{row.name} {row.hash} (escapelab {row.version}, {row.tasks_done} tasks done)")
    click.echo(f"named by (its fields that differ from the defaults): {json.dumps(science(spec))}")
    click.echo(json.dumps(row.spec, indent=2))
    click.echo(markdown_table(exp.summarize(spec, db.records(row.hash))))
    times = db.worker_times(row.hash)
    if times:
        click.echo("wall time per worker (tasks, seconds):")
        click.echo(
            markdown_table(
                [{"worker": w, "tasks": n, "seconds": round(t, 2)} for w, (n, t) in times.items()]
            )
        )
    failures = open_failures(db, row.hash)
    if failures:
        click.echo(f"{len(failures)} task(s) failed and are not stored (a rerun retries them):")
        for failure in failures:
            click.echo(f"  {failure.key} on {failure.worker}: {failure.error}")


@main.command()
@click.argument("hash_prefix")
@click.option(
    "--member",
    type=int,
    help="The bad local minimum to look at (default: the first); for a lottery run, the "
    "network (default: 0).",
)
@click.option(
    "--level",
    type=int,
    help="Lottery runs: the IMP level of the ticket (default: the sparsest within 1 percentage "
    "point of the dense test accuracy, else the last).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the figures (default: <store>/<hash>/landscape/).",
)
@store_option
def landscape(
    hash_prefix: str, member: int | None, level: int | None, out: Path | None, store: Path
) -> None:
    """Hessian spectra, escape-direction slice and interpolation around a stored bad minimum
    of a width-sweep or minima-census run, or the interpolation from the dense network to its
    ticket of a lottery run (HASH_PREFIX)."""
    from escapelab.report.landscape_views import LANDSCAPE_EXPERIMENTS, stored_landscape_figures

    db = Store(store)
    row = db.find(hash_prefix)
    if row.name not in LANDSCAPE_EXPERIMENTS:
        raise SpecError(
            "hash",
            f"{row.hash} is a {row.name} run; landscape figures need a run of "
            + ", ".join(LANDSCAPE_EXPERIMENTS),
        )
    _, spec, _ = prepare(row.name, row.spec)
    out_dir = out or db.root / row.hash / "landscape"
    paths = stored_landscape_figures(db, row.name, row.hash, spec, out_dir, member, level)
    if not paths:
        what = "finished pruning level" if row.name == "lottery" else "bad local minimum"
        raise LookupError(f"{row.name} {row.hash} stored no {what} to look at")
    click.echo("\n".join(f"figure: {p}" for p in paths))


@main.command()
@click.argument("hash_prefix")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file; .csv or .parquet (default: <hash>.csv).",
)
@store_option
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
@click.option(
    "--max-width",
    type=click.IntRange(min=2, max=MAX_COUNT_WIDTH),
    default=30,
    show_default=True,
    help=f"Widest student m (at most {MAX_COUNT_WIDTH}: the counting grows as m^3).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Also measure which constructions stay critical (certified critical points embedded "
    "wider, exact gradients on samples of each subspace; about 15 s per teacher); writes "
    "count_check.md.",
)
@click.option(
    "--verify-activation",
    type=click.Choice(CHECK_ACTIVATIONS),
    default="erf",
    show_default=True,
    help="Activation of the teachers and students of --verify.",
)
@click.option(
    "--verify-teachers",
    type=click.IntRange(min=1, max=MAX_CHECK_TEACHERS),
    default=2,
    show_default=True,
    help="Teachers (seeds 0, 1, ...) of --verify: d = 3, r* = 3.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("escapelab-report"),
    show_default=True,
)
def counts(
    r_stars: str,
    max_width: int,
    verify: bool,
    verify_activation: str,
    verify_teachers: int,
    out: Path,
) -> None:
    """Symmetry-induced subspace counts T(r*, m) and G(r, m): table, crossover and figure.

    Only constructions measured to stay critical are counted: duplication at every critical
    point, zero-output units and cancelling groups at global minima (see --verify).
    """
    from escapelab.report.counts import write_symmetry_counts
    from escapelab.theory.symmetry_counts import counts_table

    teachers = []
    for value in parse_sequence(r_stars, "--r-star"):
        text = str(value).strip()
        if not text.isdigit() or not 2 <= int(text) <= MAX_COUNT_R_STAR:
            raise SpecError(
                "--r-star",
                f"teacher widths must be integers 2..{MAX_COUNT_R_STAR}, given as 2,3,4 or "
                f"2..6; got {r_stars!r}",
            )
        teachers.append(int(text))
    try:
        table = counts_table(teachers, max_width)
    except SpecError as err:  # name the option, not the Python argument
        option = {"r_stars": "--r-star", "max_width": "--max-width"}.get(err.field, err.field)
        raise SpecError(option, err.message) from None
    with staged_dir(out) as stage:
        table_path, figure = (
            out / p.relative_to(stage) for p in write_symmetry_counts(table, stage)
        )
    for r_star in table.r_stars:
        click.echo(
            f"r* = {r_star}: saddle subspaces outnumber global-minimum subspaces "
            f"{table.dominance(r_star)}"
        )
    click.echo(f"table: {table_path}\nfigure: {figure}")
    if verify:
        _verify_counts(verify_activation, verify_teachers, out)


def _verify_counts(activation: str, teachers: int, out: Path) -> None:
    """``counts --verify``: measure every construction, print the verdicts, write the table."""
    from escapelab.landscape.critical_subspaces import check_constructions, construction_verdicts
    from escapelab.report.counts import write_count_check
    from escapelab.report.findings import count_check_findings

    rows = check_constructions(activation, teachers=teachers, progress=True)
    verdicts = construction_verdicts(rows)
    with staged_dir(out) as stage:
        path = out / write_count_check(rows, verdicts, stage).relative_to(stage)
    click.echo(markdown_table(verdicts), nl=False)
    for sentence in count_check_findings(verdicts):
        click.echo(sentence)
    click.echo(f"check: {path}")


@main.group("store")
def store_group() -> None:
    """Check a store for damage, or salvage a damaged one into a new store."""


@store_group.command("check")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def store_check(directory: Path) -> None:
    """Full integrity check of the store in DIRECTORY (exit 3 when damaged)."""
    result = check_store(directory)
    if result.ok:
        click.echo(
            f"{result.path}: ok (schema {result.version}, {result.experiments} experiment(s), "
            f"{result.tasks} task(s))"
        )
        return
    click.echo(f"{result.path}: damaged: {'; '.join(result.problems[:3])}", err=True)
    click.echo(f"salvage it with: escapelab store recover {directory} --into NEW_DIR", err=True)
    sys.exit(EXIT_ENVIRONMENT)


@store_group.command("recover")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--into",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A new directory for the salvaged store.",
)
def store_recover(directory: Path, into: Path) -> None:
    """Copy every readable experiment and task of the store in DIRECTORY into a new store."""
    done = recover_store(directory, into)
    header = " (its header was rebuilt)" if done.header_rebuilt else ""
    click.echo(
        f"recovered into {done.target}{header}: {done.experiments} experiment(s), {done.tasks} "
        f"task(s), {done.records} record(s), {done.aliases} alias(es)"
    )
    lost = len(done.lost_tasks)
    click.echo(f"lost: {done.lost_experiments} experiment(s), {lost} task(s)")
    for key in done.lost_tasks[:20]:
        click.echo(f"  lost task {key}")
    if lost > 20:
        click.echo(f"  ... and {lost - 20} more")
    if lost:
        click.echo(
            f"rerun those experiments with --store {done.target} to recompute the lost tasks"
        )


__all__ = ["get_experiment", "main"]
if __name__ == "__main__":
    main()
