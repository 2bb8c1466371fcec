"""Run an experiment: validate the spec, skip stored tasks, run the rest, store each as it ends.

Workers (local processes) only compute records; this driver is the store's single writer and
commits every finished task in its own transaction, so a sweep killed at any point loses at most
the tasks in flight, and running it again finishes the rest without duplicating anything.
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
from escapelab.experiments.base import Task, resolve_device
from escapelab.report.tables import write_report
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
    """Run experiment ``name`` with ``spec`` (dict or spec object), resuming from ``store``."""
    exp, spec_obj, h = prepare(name, spec)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    device_name = str(resolve_device(device))
    db = Store(store)
    spec_data = to_dict(spec_obj)
    tasks = exp.tasks(spec_obj)
    done = db.done_keys(h)
    todo = [
        replace(t, checkpoint_dir=str(db.root / h / "checkpoints" / t.key.replace("/", "__")))
        for t in tasks
        if t.key not in done
    ]
    db.register(name, spec_data, h, __version__)
    bar = tqdm(
        total=len(tasks),
        initial=len(tasks) - len(todo),
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
    records = db.records(h)
    return RunOutcome(
        name,
        h,
        spec_obj,
        records,
        exp.summarize(spec_obj, records),
        len(todo),
        len(tasks) - len(todo),
        db.root,
    )


def write_outputs(outcome: RunOutcome, out_dir: str | Path | None = None) -> Path:
    """Figures, summary table (CSV + Markdown) and an HTML report; default <store>/<hash>/."""
    exp = get_experiment(outcome.experiment)
    target = Path(out_dir) if out_dir else outcome.store / outcome.spec_hash
    figures = exp.figures(outcome.spec, outcome.records, target)
    return write_report(
        target,
        f"{outcome.experiment}: {exp.description}",
        to_dict(outcome.spec),
        outcome.spec_hash,
        outcome.summary,
        figures,
    )
