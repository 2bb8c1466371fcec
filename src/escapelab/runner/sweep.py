"""Run an experiment: validate the spec, skip stored tasks, run the rest, store each as it ends.

Workers (local processes) only compute records; this driver is the store's single writer and
commits every finished task in its own transaction, so a sweep killed at any point loses at most
the tasks in flight, and running it again finishes the rest without duplicating anything.

What is stored is judged by seed coverage, not by task key: ``seeds_per_task`` is an execution
option (not part of the hash), so one run may be stored in blocks of one size and resumed in
blocks of another; see :func:`uncovered_tasks`.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from escapelab import __version__
from escapelab.config import build, spec_hash, to_dict
from escapelab.experiments import get_experiment
from escapelab.experiments.base import Task, resolve_device, seed_block_key, seed_range
from escapelab.runner.store import Store


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced: the spec's hash, all its records and what this call did."""

    experiment: str
    spec_hash: str
    spec: Any
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    tasks_run: int
    tasks_skipped: int
    store: Path


def _gaps(lo: int, hi: int, covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The maximal sub-ranges of [lo, hi) that no range in ``covered`` contains."""
    gaps, start = [], lo
    for a, b in sorted(covered):
        if b <= start or a >= hi:
            continue
        if a > start:
            gaps.append((start, a))
        start = max(start, b)
        if start >= hi:
            break
    if start < hi:
        gaps.append((start, hi))
    return gaps


def uncovered_tasks(tasks: list[Task], done: set[str]) -> tuple[list[Task], int]:
    """The work left of ``tasks`` given the keys of the stored tasks, and how many planned tasks
    are stored in full.

    A planned seed-block task (key ``{group}/seeds=LO-HI`` and params ``lo``/``hi``) runs only
    its seeds that no stored task of the same group covers, whatever blocks stored them: it is
    skipped when all are covered, kept unchanged when none are, and otherwise split into one task
    per uncovered contiguous range (key rebuilt with :func:`seed_block_key`, params with the new
    ``lo``/``hi``). This is sound because a member's results depend only on its seed, never on
    the block it runs in. Any other task is skipped exactly when its key is stored.
    """
    covered: dict[str, list[tuple[int, int]]] = {}
    for key in done:
        parsed = seed_range(key)
        if parsed is not None:
            covered.setdefault(parsed[0], []).append(parsed[1:])
    todo: list[Task] = []
    skipped = 0
    for task in tasks:
        parsed = seed_range(task.key)
        if parsed is None or (task.params.get("lo"), task.params.get("hi")) != parsed[1:]:
            if task.key in done:
                skipped += 1
            else:
                todo.append(task)
            continue
        group, lo, hi = parsed
        gaps = _gaps(lo, hi, covered.get(group, []))
        if not gaps:
            skipped += 1
        elif gaps == [(lo, hi)]:
            todo.append(task)
        else:
            todo.extend(
                replace(
                    task, key=seed_block_key(group, a, b), params={**task.params, "lo": a, "hi": b}
                )
                for a, b in gaps
            )
    return todo, skipped


def _worker_init() -> None:
    torch.set_num_threads(1)


def _run_one(
    name: str, spec_data: dict[str, Any], task: Task, device: str
) -> tuple[str, list[dict[str, Any]], float]:
    """Run one task from plain data (picklable across processes); returns key, records, time."""
    exp = get_experiment(name)
    spec = build(exp.spec_type, spec_data)
    start = time.perf_counter()
    records = exp.run_task(spec, task, resolve_device(device))
    return task.key, records, time.perf_counter() - start


def prepare(name: str, spec: Mapping[str, Any] | object | None) -> tuple[Any, Any, str]:
    """Validate: the experiment, its spec (a dict or a spec object) and the spec's hash."""
    exp = get_experiment(name)
    if spec is None or isinstance(spec, Mapping):
        spec = build(exp.spec_type, spec or {})
    elif not isinstance(spec, exp.spec_type):
        raise TypeError(f"spec for {name} must be a dict or {exp.spec_type.__name__}")
    return exp, spec, spec_hash(name, spec)


def run(
    name: str,
    spec: Mapping[str, Any] | object | None = None,
    store: str | Path = "escapelab-runs",
    workers: int = 1,
    device: str = "auto",
    progress: bool = True,
) -> RunOutcome:
    """Run experiment ``name`` with ``spec`` (dict or spec object), resuming from ``store``.

    Only the seeds the store does not hold yet are run (:func:`uncovered_tasks`), so
    ``tasks_run`` counts the tasks actually run (a planned task partly stored runs as the pieces
    it lacks) and ``tasks_skipped`` the planned tasks stored in full.
    """
    exp, spec_obj, h = prepare(name, spec)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    device_name = str(resolve_device(device))
    db = Store(store)
    spec_data = to_dict(spec_obj)
    left, skipped = uncovered_tasks(exp.tasks(spec_obj), db.done_keys(h))
    todo = [
        replace(t, checkpoint_dir=str(db.root / h / "checkpoints" / t.key.replace("/", "__")))
        for t in left
    ]
    db.register(name, spec_data, h, __version__)
    started = time.perf_counter()
    bar = tqdm(
        total=skipped + len(todo),
        initial=skipped,
        disable=not progress,
        desc=f"{name} {h[:8]}",
        unit="task",
    )
    if workers == 1 or len(todo) <= 1:
        for task in todo:
            key, records, wall = _run_one(name, spec_data, task, device_name)
            db.save_task(h, key, records, wall, __version__)
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(workers, len(todo)), mp_context=ctx, initializer=_worker_init
        ) as pool:
            pending = {pool.submit(_run_one, name, spec_data, t, device_name) for t in todo}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    key, records, wall = fut.result()
                    db.save_task(h, key, records, wall, __version__)
                    bar.update()
    bar.close()
    if todo:
        from escapelab.report.provenance import provenance, record

        wall = time.perf_counter() - started
        record(db.root / h, provenance(device_name, workers, len(todo), wall))
    records = db.records(h)
    return RunOutcome(
        name,
        h,
        spec_obj,
        records,
        exp.summarize(spec_obj, records),
        len(todo),
        skipped,
        db.root,
    )


def write_outputs(outcome: RunOutcome, out_dir: str | Path | None = None) -> Path:
    """The run's page (report.html, with style.css beside), its figures and its summary table
    (CSV + Markdown); default folder <store>/<hash>/. The page is the one ``escapelab report``
    puts in its site (:mod:`escapelab.report.site`), without the site's navigation."""
    from escapelab.report.site import run_view, write_run_page

    target = Path(out_dir) if out_dir else outcome.store / outcome.spec_hash
    db = Store(outcome.store)
    return write_run_page(run_view(db, db.find(outcome.spec_hash), target), target, None)
