"""Run an experiment: validate the spec, skip stored tasks, run the rest, store each as it ends.

Workers (local processes) only compute records; this driver is the store's single writer and
commits every finished task in its own transaction, so a sweep killed at any point loses at most
the tasks in flight, and running it again finishes the rest without duplicating anything.

What is stored is judged by seed coverage, not by task key: ``seeds_per_task`` is an execution
option (not part of the hash), so one run may be stored in blocks of one size and resumed in
blocks of another; see :func:`uncovered_tasks`.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from escapelab import __version__
from escapelab.atomic import staged_dir
from escapelab.config import SpecError, build, spec_hash, to_dict
from escapelab.errors import EnvironmentFault, RunInterrupted, one_line
from escapelab.experiments import get_experiment
from escapelab.experiments.base import Task, resolve_device, seed_block_key, seed_range
from escapelab.runner.budget import MemoryNeed, check_memory
from escapelab.runner.executors import (
    DaskCluster,
    Executor,
    InlineExecutor,
    PoolExecutor,
    SchedulerLost,
    TaskCall,
    TaskResult,
    local_worker_name,
)
from escapelab.runner.store import Store, TaskFailure, new_owner


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced: the spec's hash, all its records and what this call did
    (``tasks_by_others``: tasks of this run stored meanwhile by another process on the store;
    ``failures``: the tasks of the run that raised and are still not stored, each with its
    error -- running the spec again retries exactly those)."""

    experiment: str
    spec_hash: str
    spec: Any
    records: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    tasks_run: int
    tasks_skipped: int
    store: Path
    tasks_by_others: int = 0
    failures: tuple[TaskFailure, ...] = ()


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


def _run_one(
    name: str, spec_data: dict[str, Any], task: Task, device: str
) -> tuple[str, list[dict[str, Any]], float]:
    """Run one task from plain data (picklable across processes); returns key, records, time."""
    exp = get_experiment(name)
    spec = build(exp.spec_type, spec_data)
    start = time.perf_counter()
    records = exp.run_task(spec, task, resolve_device(device))
    return task.key, records, time.perf_counter() - start


def _environment_fault(err: BaseException) -> bool:
    """Whether a task's exception is a fault of the machine or the input (disk, memory, the
    device, a bad spec) that every other task would hit too: such a fault stops the run, as
    a plain error of one task does not."""
    return isinstance(err, (OSError, MemoryError, EnvironmentFault, SpecError)) or (
        type(err).__name__ == "OutOfMemoryError"
    )


def attempt(call: TaskCall, threads: int | None = None, worker: str | None = None) -> TaskResult:
    """Run one task wherever the executor put it: its records, or the one-line error it raised.

    A task that raises is a recorded outcome (the run goes on without it, and the next run of
    the spec retries it), except for faults of the environment (:func:`_environment_fault`),
    which propagate and stop the run. ``threads``: torch's intra-op threads for this worker;
    ``worker``: its name in the attempts log (default host:pid)."""
    if threads is not None:
        torch.set_num_threads(threads)
    name = worker or local_worker_name()
    start = time.perf_counter()
    try:
        key, records, wall = _run_one(call.experiment, call.spec, call.task, call.device)
    except Exception as err:
        if _environment_fault(err):
            raise
        message = one_line(f"{type(err).__name__}: {err}")
        return TaskResult(call.task.key, None, time.perf_counter() - start, name, message)
    return TaskResult(key, records, wall, name)


def prepare(name: str, spec: Mapping[str, Any] | object | None) -> tuple[Any, Any, str]:
    """Validate: the experiment, its spec (a dict or a spec object) and the spec's hash."""
    exp = get_experiment(name)
    if spec is None or isinstance(spec, Mapping):
        spec = build(exp.spec_type, spec or {})
    elif not isinstance(spec, exp.spec_type):
        raise TypeError(f"spec for {name} must be a dict or {exp.spec_type.__name__}")
    return exp, spec, spec_hash(name, spec)


@dataclass(frozen=True)
class Plan:
    """A validated run, before anything is written: the spec, its tasks, the memory one task
    is estimated to need (None when not estimated), the device and, for a Dask run, the
    cluster to reach (None: local processes)."""

    experiment: Any
    spec: Any
    spec_hash: str
    tasks: list[Task]
    memory: MemoryNeed | None
    device: str
    cluster: DaskCluster | None = None


EXECUTORS = ("local", "dask")
_DEVICE_NAME = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


def choose_cluster(executor: str | DaskCluster, workers: int = 1) -> DaskCluster | None:
    """The Dask cluster an ``executor`` choice names: None for ``"local"`` (processes of this
    machine), a LocalCluster of ``workers`` processes for ``"dask"``, or the given
    :class:`~escapelab.runner.executors.DaskCluster`."""
    if isinstance(executor, DaskCluster):
        return executor
    if executor == "local":
        return None
    if executor == "dask":
        return DaskCluster(workers=workers)
    raise SpecError("--executor", f"must be one of {', '.join(EXECUTORS)}; got {executor!r}")


def plan(
    name: str,
    spec: Mapping[str, Any] | object | None = None,
    workers: int = 1,
    device: str = "auto",
    max_memory: int | None = None,
    executor: str | DaskCluster = "local",
) -> Plan:
    """Everything :func:`run` checks before it touches the store: the spec, the executor, the
    device (one of those torch offers here; for a cluster elsewhere only its name, the workers
    resolve it), the task count (``MAX_TASKS``) and the memory that the tasks running at once
    on this machine need against ``max_memory`` bytes (default: what the system has
    available; for a cluster elsewhere only against an explicit ``max_memory``, per task).
    Raises SpecError naming the field at fault."""
    exp, spec_obj, h = prepare(name, spec)
    if workers < 1:
        raise SpecError("--workers", f"must be >= 1, got {workers}")
    cluster = choose_cluster(executor, workers)
    if cluster is not None:
        cluster.check_installed()
    here = cluster is None or cluster.local_workers is not None
    if here:
        device_name = str(resolve_device(device))
        at_once = workers if cluster is None else cluster.local_workers
        memory = check_memory(spec_obj, at_once or 1, max_memory)
    else:
        device_name = str(device).strip().lower()
        if not _DEVICE_NAME.match(device_name):
            raise SpecError("--device", f"must be auto, cpu, cuda, cuda:N or mps; got {device!r}")
        memory = check_memory(spec_obj, 1, max_memory) if max_memory else None
    return Plan(exp, spec_obj, h, exp.tasks(spec_obj), memory, device_name, cluster)


class _Stages:
    """The tasks of a run as it grows: the planned ones, then, for an adaptive experiment (one
    with a ``next_stage(spec, records) -> list[Task]`` method), each further stage its stored
    records call for, e.g. more seeds where a rate is not yet resolved.

    A stage is asked for only when every task so far is stored, so it is decided on complete
    data; and it is a function of the stored records alone, so a resumed run (or a second
    process on the same store) decides the same stages and runs only what is not stored."""

    def __init__(self, experiment: Any, spec: Any, db: Store, spec_hash: str, tasks: list[Task]):
        self.experiment, self.spec, self.db, self.spec_hash = experiment, spec, db, spec_hash
        self.tasks = tasks

    def grow(self) -> list[Task]:
        """Add the next stage's unstored tasks and return them ([] when the run is complete,
        the experiment is not adaptive, or planned tasks are still unstored)."""
        stage = getattr(self.experiment, "next_stage", None)
        if stage is None:
            return []
        done = self.db.done_keys(self.spec_hash)
        if uncovered_tasks(self.tasks, done)[0]:
            return []
        more = uncovered_tasks(stage(self.spec, self.db.records(self.spec_hash)), done)[0]
        self.tasks += more
        return more


class _LeaseKeeper(threading.Thread):
    """Renews this run's claims every third of the lease, from a thread of its own, so they
    stay alive while the main thread computes a task."""

    def __init__(self, db: Store, spec_hash: str, owner: str, lease_s: float):
        super().__init__(daemon=True, name="escapelab-lease")
        self.db, self.spec_hash, self.owner, self.lease_s = db, spec_hash, owner, lease_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.lease_s / 3):
            with suppress(Exception):  # a missed renewal only shortens the lease
                self.db.renew(self.spec_hash, self.owner, self.lease_s)


@contextmanager
def _signals_interrupt() -> Iterator[list[int]]:
    """Within the block Ctrl-C raises KeyboardInterrupt and SIGTERM raises RunInterrupted
    (clusters stop jobs with SIGTERM); the handlers before are restored after. Only the main
    thread can do this.

    The block yields the list of signals received. Python raises a signal's exception at the
    next bytecode the main thread runs, and if that bytecode belongs to a finalizer (a
    ``__del__``, a weakref callback) the exception is printed as "ignored" and lost; a run
    computing in the driver (``--workers 1``) would then go on to its last task. The loop
    that drives the tasks checks the list after every task (:func:`_drive`), so a signal stops
    the run at the latest when the task in flight ends."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_term(signum: int, frame: object) -> None:
        received.append(signal.SIGTERM)
        raise RunInterrupted("SIGTERM", signal.SIGTERM)

    def on_int(signum: int, frame: object) -> None:
        received.append(signal.SIGINT)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term), signal.signal(signal.SIGINT, on_int)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def run(
    name: str,
    spec: Mapping[str, Any] | object | None = None,
    store: str | Path = "escapelab-runs",
    workers: int = 1,
    device: str = "auto",
    progress: bool = True,
    max_memory: int | None = None,
    lease_s: float = 60.0,
    executor: str | DaskCluster = "local",
) -> RunOutcome:
    """Run experiment ``name`` with ``spec`` (dict or spec object), resuming from ``store``.

    Only the seeds the store does not hold yet are run (:func:`uncovered_tasks`), so
    ``tasks_run`` counts the tasks actually run (a planned task partly stored runs as the pieces
    it lacks) and ``tasks_skipped`` the planned tasks stored in full. Nothing is written before
    :func:`plan` accepts the spec.

    ``executor``: ``"local"`` (default: the driver's process for ``workers=1``, else a pool of
    ``workers`` processes), ``"dask"`` (a Dask ``LocalCluster`` of ``workers`` processes) or a
    :class:`~escapelab.runner.executors.DaskCluster` (a running scheduler, a LocalCluster or
    SLURM jobs). Whatever computes the tasks, this process alone writes the store, one
    transaction per finished task, and logs which worker ran each task and its wall time there
    (:meth:`Store.worker_times`). A task that raises is logged with its error
    (``RunOutcome.failures``) and the others go on; the next run of the spec retries only the
    failed ones. A fault of the environment in a task (disk, memory, a lost Dask scheduler)
    stops the run with every finished task stored.

    Several processes may run the same spec on the same store at once: each claims its tasks in
    the store (:meth:`Store.claim`, a lease of ``lease_s`` seconds renewed while it works), so
    every task is computed once, and each process waits for the tasks the others hold and ends
    with the full result (``tasks_by_others`` counts those). A killed claimant's tasks are taken
    over once its lease expires, or at once when it ran on this host.

    Ctrl-C or SIGTERM stops the run within about a second: tasks in flight are dropped (workers
    terminated, claims released), every finished task stays stored, and
    :class:`~escapelab.errors.RunInterrupted` says so.
    """
    p = plan(name, spec, workers, device, max_memory, executor)
    h, db = p.spec_hash, Store(store)
    spec_data = to_dict(p.spec)
    done_before = db.done_keys(h)
    stages = _Stages(p.experiment, p.spec, db, h, list(p.tasks))
    stages.grow()
    left, skipped = uncovered_tasks(stages.tasks, done_before)
    owner = new_owner()
    if left:
        db.register(name, spec_data, h, __version__)

    failed_keys: set[str] = set()  # tasks that raised in this run: not run again by it

    def next_tasks(n: int) -> tuple[list[Task], int]:
        def todo(taken: set[str]) -> list[Task]:
            return uncovered_tasks(stages.tasks, taken | failed_keys)[0]

        claimed, unstored = db.claim(h, todo, owner, n, lease_s)
        return [
            replace(t, checkpoint_dir=str(db.checkpoint_dir(h, t.key))) for t in claimed
        ], unstored

    started = time.perf_counter()
    bar = tqdm(
        total=skipped + len(left),
        initial=skipped,
        disable=not progress,
        desc=f"{name} {h[:8]}",
        unit="task",
    )
    keeper = _LeaseKeeper(db, h, owner, lease_s)
    ran, failed = 0, 0

    def save(result: TaskResult) -> None:
        nonlocal ran, failed
        if result.records is None:
            db.save_failure(h, result.key, result.error or "", result.wall_time, result.worker)
            failed_keys.add(result.key)
            failed += 1
            bar.set_postfix(failed=failed)
        else:
            db.save_task(
                h, result.key, result.records, result.wall_time, __version__, result.worker
            )
            ran += 1
        bar.update()

    runner: Executor | None = None
    completed = False
    try:
        with _signals_interrupt() as received:
            if left:
                keeper.start()
                runner = _start_executor(p, workers)
                while True:
                    _drive(runner, name, spec_data, p.device, next_tasks, save, received)
                    more = [] if failed_keys else stages.grow()
                    if not more:
                        break
                    bar.total += len(more)
                    bar.refresh()
        completed = True
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        stored = len(db.done_keys(h)) if db.path.exists() else 0
        raise RunInterrupted(
            f"{ran} task(s) finished in this run and stored; {stored} stored in all for {h} in "
            f"{db.root}; tasks in flight were dropped; rerun the same command to resume",
            signum,
        ) from None
    except SchedulerLost as err:
        raise SchedulerLost(err.address, f"{ran} task(s) of this run stored") from None
    finally:
        keeper.stopped.set()
        bar.close()
        if runner is not None:  # done: release the workers; otherwise drop their work now
            runner.close() if completed else runner.stop()
        if left:
            with suppress(Exception):
                db.release(h, owner)
    if ran:
        from escapelab.report.provenance import provenance, record

        entry = provenance(p.device, workers, ran, time.perf_counter() - started)
        record(db.root / h, {**entry, "executor": runner.describe() if runner else "local"})
    records = db.records(h) if (left or done_before) else []
    by_others = len(db.done_keys(h) - done_before) - ran if left else 0
    summary = p.experiment.summarize(p.spec, records)
    return RunOutcome(
        name,
        h,
        p.spec,
        records,
        summary,
        ran,
        skipped,
        db.root,
        max(by_others, 0),
        tuple(open_failures(db, h)),
    )


def open_failures(db: Store, spec_hash: str) -> list[TaskFailure]:
    """The logged failures of a run whose seeds are still not all stored (a failed block
    stored since in blocks of another size is no longer a failure)."""
    failures = db.failures(spec_hash)
    if not failures:
        return []
    done = db.done_keys(spec_hash)
    still = []
    for failure in failures:
        parsed = seed_range(failure.key)
        probe = Task(failure.key, {"lo": parsed[1], "hi": parsed[2]} if parsed else {})
        if uncovered_tasks([probe], done)[0]:
            still.append(failure)
    return still


# how often a run with nothing to claim looks again for the tasks another process holds
_POLL_S = 0.5


def _start_executor(p: Plan, workers: int) -> Executor:
    """The executor of a plan: the driver itself (one local worker), a local process pool,
    or a Dask cluster (connected, or started, now)."""
    if p.cluster is not None:
        return p.cluster.start()
    return InlineExecutor() if workers == 1 else PoolExecutor(workers)


def _drive(
    runner: Executor,
    name: str,
    spec_data: dict[str, Any],
    device: str,
    next_tasks: Callable[[int], tuple[list[Task], int]],
    save: Callable[[TaskResult], None],
    received: list[int],
) -> None:
    """The claim-submit-store loop: keep ``runner.slots`` tasks claimed and submitted, store
    each result as it comes (``save``), until no task of the run is unstored; when the tasks
    left are claimed by another process, poll until it stores them (or its claims die).
    A signal in ``received`` whose exception was lost (:func:`_signals_interrupt`) stops it."""
    while True:
        if received and received[0] == signal.SIGTERM:
            raise RunInterrupted("SIGTERM", signal.SIGTERM)
        if received:
            raise KeyboardInterrupt
        free = runner.slots - runner.in_flight
        if free > 0:
            batch, unstored = next_tasks(free)
            for task in batch:
                runner.submit(attempt, TaskCall(name, spec_data, task, device))
            if not runner.in_flight:
                if not unstored:
                    return
                time.sleep(_POLL_S)  # the rest is claimed by another process
                continue
        for result in runner.results(timeout=_POLL_S):
            save(result)


def write_outputs(outcome: RunOutcome, out_dir: str | Path | None = None) -> Path:
    """The run's page (report.html, with style.css beside), its figures and its summary table
    (CSV + Markdown); default folder <store>/<hash>/. The page is the one ``escapelab report``
    puts in its site (:mod:`escapelab.report.site`), without the site's navigation.

    Written atomically (:func:`~escapelab.atomic.staged_dir`): a full disk or a kill leaves the
    previous files, never a half-written one."""
    from escapelab.report.site import run_view, write_run_page

    target = Path(out_dir) if out_dir else outcome.store / outcome.spec_hash
    db = Store(outcome.store)
    with staged_dir(target) as stage:  # each file appears whole or not at all
        page = write_run_page(run_view(db, db.find(outcome.spec_hash), stage), stage, None)
    return target / page.relative_to(stage)
