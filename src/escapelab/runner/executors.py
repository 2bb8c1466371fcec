"""Where a run's tasks are computed: in the driver, in local processes, or on a Dask cluster.

Every executor takes plain-data task calls (:class:`TaskCall`: experiment name, spec as a dict,
the task, the device name) and hands back plain-data results (:class:`TaskResult`: records or an
error, wall time on the worker, the worker's name). None of them writes the store: the driver
(:func:`escapelab.runner.sweep.run`) claims tasks, submits them, and commits each result in its
own transaction, so resume and no-duplicates hold whatever runs the tasks.

* :class:`InlineExecutor` -- one task at a time in the driver's own process (``--workers 1``).
* :class:`PoolExecutor` -- a pool of local worker processes (``--workers N``), one thread each.
* :class:`DaskExecutor` -- ``dask.distributed`` futures on a cluster reached through
  :class:`DaskCluster`: a running scheduler (``tcp://HOST:PORT``), a ``LocalCluster`` of N
  single-threaded worker processes, or SLURM jobs through ``dask-jobqueue``
  (:class:`SlurmConfig`). A worker that dies mid-task (SIGKILL, a node lost) has its task
  rescheduled by the Dask scheduler on another worker; a lost scheduler stops the run with
  :class:`SchedulerLost` (every finished task is already stored).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from escapelab.config import SpecError, load_config_file
from escapelab.errors import EnvironmentFault
from escapelab.experiments.base import Task

# Threading libraries that size their pools from the core count: every worker process is pinned
# to one thread, or N workers on N cores would run N x N threads (oversubscription).
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


@dataclass(frozen=True)
class TaskCall:
    """What a worker needs to run one task, as plain (picklable) data."""

    experiment: str
    spec: dict[str, Any]
    task: Task
    device: str


@dataclass(frozen=True)
class TaskResult:
    """One task's outcome: its records (None when it raised), the one-line ``error`` it raised
    (None when it succeeded), its wall time on the worker (s) and the worker's name."""

    key: str
    records: list[dict[str, Any]] | None
    wall_time: float
    worker: str
    error: str | None = None


# how often a Dask driver looks for finished futures (s): far below a task's duration
_POLL_S = 0.02

# the function an executor runs for every task (escapelab.runner.sweep.attempt)
TaskFunction = Callable[..., TaskResult]


class Executor(ABC):
    """Runs task calls somewhere and reports their results; never touches the store."""

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many tasks the driver should keep submitted at once (claimed in the store)."""

    @abstractmethod
    def submit(self, fn: TaskFunction, call: TaskCall) -> None:
        """Start ``fn(call, ...)`` for one task."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Tasks submitted whose results were not handed back yet."""

    @abstractmethod
    def results(self, timeout: float) -> list[TaskResult]:
        """The results of tasks that ended, waiting up to ``timeout`` s for the first one."""

    def stop(self) -> None:
        """Drop the tasks in flight now (Ctrl-C, a fault): nothing more is computed."""
        self.close()

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release the workers after a run that ended normally."""

    def describe(self) -> str:
        """A few words for the logs and the provenance: what ran the tasks."""
        return type(self).__name__


def local_worker_name() -> str:
    """``host:pid`` of this process, the name a local worker gives its results."""
    return f"{socket.gethostname()}:{os.getpid()}"


class InlineExecutor(Executor):
    """One task at a time, computed in the driver's process when its result is asked for."""

    def __init__(self) -> None:
        self._queued: list[tuple[TaskFunction, TaskCall]] = []

    @property
    def slots(self) -> int:
        return 1

    @property
    def in_flight(self) -> int:
        return len(self._queued)

    def submit(self, fn: TaskFunction, call: TaskCall) -> None:
        self._queued.append((fn, call))

    def results(self, timeout: float) -> list[TaskResult]:
        if not self._queued:
            return []
        fn, call = self._queued.pop(0)
        return [fn(call)]

    def stop(self) -> None:
        self._queued.clear()

    def describe(self) -> str:
        return "local (in the driver process)"


def _pool_worker_init() -> None:
    """A pool worker: one thread, and deaf to Ctrl-C (the driver stops it, without tracebacks)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class PoolExecutor(Executor):
    """``workers`` local processes (spawned, one thread each), fed through a process pool."""

    def __init__(self, workers: int):
        self.workers = workers
        ctx = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_pool_worker_init)
        self._pending: set[Future] = set()

    @property
    def slots(self) -> int:
        return self.workers

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(self, fn: TaskFunction, call: TaskCall) -> None:
        self._pending.add(self._pool.submit(fn, call))

    def results(self, timeout: float) -> list[TaskResult]:
        done, self._pending = wait(self._pending, timeout=timeout, return_when=FIRST_COMPLETED)
        return [fut.result() for fut in done]

    def stop(self) -> None:
        """Cancel what has not started, terminate the worker processes (the children
        multiprocessing started for the pool), drop what they were computing."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for child in multiprocessing.active_children():
            child.terminate()
        for child in multiprocessing.active_children():
            child.join(timeout=2)
        self._pool.shutdown(wait=True)  # the pool's threads and queues close, nothing leaks
        self._pending.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def describe(self) -> str:
        return f"local ({self.workers} processes)"


class SchedulerLost(EnvironmentFault):
    """The driver lost its Dask scheduler mid-run; every finished task is stored."""

    def __init__(self, address: str, stored: str = ""):
        self.address = address
        super().__init__(
            f"Dask scheduler {address}",
            f"connection lost{f' ({stored})' if stored else ''}; tasks in flight were dropped",
            "restart the cluster and rerun the same command to resume from the store",
        )


def require(module: str, package: str, purpose: str) -> Any:
    """Import ``module`` or raise a one-line :class:`EnvironmentFault` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise EnvironmentFault(
            package,
            f"not installed, and {purpose} needs it",
            f"pip install 'escapelab[dask]' (or pip install {package})",
        ) from None


_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]?)?\s*$")
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}(:\d{2})?$")


@dataclass(frozen=True)
class SlurmConfig:
    """A ``dask_jobqueue.SLURMCluster`` of ``jobs`` SLURM jobs, each running ``processes``
    Dask workers of one thread on ``cores`` cores and ``memory`` (e.g. ``"16GB"``) for
    ``walltime`` (``HH:MM:SS`` or ``D-HH:MM:SS``). ``queue`` (partition), ``account`` and
    ``job_extra_directives`` (e.g. ``["--gres=gpu:1"]``) go into the job script as
    ``#SBATCH`` lines; ``local_directory`` is the workers' scratch space on the nodes."""

    cores: int = 1
    memory: str = "4GB"
    walltime: str = "01:00:00"
    jobs: int = 1
    processes: int | None = None
    queue: str | None = None
    account: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    local_directory: str | None = None

    def __post_init__(self) -> None:
        for name in ("cores", "jobs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"slurm.{name}", f"must be an integer >= 1, got {value!r}")
        procs = self.processes
        if procs is not None and (
            not isinstance(procs, int) or isinstance(procs, bool) or not 1 <= procs <= self.cores
        ):
            raise SpecError(
                "slurm.processes", f"must be an integer from 1 to cores={self.cores}, got {procs!r}"
            )
        if not isinstance(self.memory, str) or not _SIZE.match(self.memory):
            raise SpecError("slurm.memory", f"expected a size like 16GB, got {self.memory!r}")
        if not isinstance(self.walltime, str) or not _WALLTIME.match(self.walltime):
            raise SpecError(
                "slurm.walltime", f"expected HH:MM:SS or D-HH:MM:SS, got {self.walltime!r}"
            )
        object.__setattr__(self, "job_extra_directives", tuple(self.job_extra_directives))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SlurmConfig:
        """From a config section (a TOML ``[slurm]`` table); unknown keys are refused."""
        allowed = [f.name for f in fields(cls)]
        for key in data:
            if key not in allowed:
                raise SpecError(f"slurm.{key}", f"unknown key; allowed: {', '.join(allowed)}")
        return cls(**dict(data))

    @classmethod
    def from_file(cls, path: str | Path) -> SlurmConfig:
        """From the ``[slurm]`` section of a TOML or JSON file (``--slurm FILE``)."""
        data = load_config_file(Path(path))
        section = data.get("slurm")
        if not isinstance(section, Mapping):
            raise SpecError("--slurm", f"{path} has no [slurm] section (cores, memory, ...)")
        return cls.from_mapping(section)

    def cluster_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``dask_jobqueue.SLURMCluster``: one thread per worker, the
        thread variables of :data:`THREAD_ENV` exported in the job script."""
        processes = self.processes or self.cores
        kwargs: dict[str, Any] = {
            "cores": self.cores,
            "processes": processes,
            "memory": self.memory,
            "walltime": self.walltime,
            "job_script_prologue": [f"export {k}={v}" for k, v in THREAD_ENV.items()],
            "job_extra_directives": list(self.job_extra_directives),
        }
        for name in ("queue", "account", "local_directory"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs


_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$")


@dataclass(frozen=True)
class DaskCluster:
    """How to reach a Dask cluster; exactly one of: ``scheduler`` (the address of a running
    one, ``tcp://HOST:PORT``), ``slurm`` (SLURM jobs, :class:`SlurmConfig` or its mapping) or
    ``workers`` (a ``LocalCluster`` of that many single-threaded worker processes; the
    default, with the number of CPUs). ``connect_timeout``: seconds to reach the scheduler,
    and to reach it again after the connection dropped (then the run stops)."""

    scheduler: str | None = None
    workers: int | None = None
    slurm: SlurmConfig | Mapping[str, Any] | None = None
    connect_timeout: float = 10.0
    _slurm: SlurmConfig | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        given = [n for n in ("scheduler", "workers", "slurm") if getattr(self, n) is not None]
        if len(given) > 1:
            names = {"scheduler": "--scheduler", "workers": "--dask-workers", "slurm": "--slurm"}
            raise SpecError(
                names[given[1]],
                f"give only one of --scheduler, --dask-workers, --slurm (got {names[given[0]]} "
                f"and {names[given[1]]})",
            )
        if self.scheduler is not None and not _ADDRESS.match(str(self.scheduler)):
            raise SpecError(
                "--scheduler", f"expected an address like tcp://HOST:PORT, got {self.scheduler!r}"
            )
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise SpecError("--dask-workers", f"must be an integer >= 1, got {self.workers!r}")
        if self.slurm is not None:
            config = (
                self.slurm
                if isinstance(self.slurm, SlurmConfig)
                else SlurmConfig.from_mapping(self.slurm)
            )
            object.__setattr__(self, "_slurm", config)

    @property
    def local_workers(self) -> int | None:
        """The workers of a LocalCluster this makes on this machine (None: the cluster is
        elsewhere)."""
        if self.scheduler is not None or self._slurm is not None:
            return None
        return self.workers or os.cpu_count() or 1

    def check_installed(self) -> tuple[Any, Any]:
        """The modules this cluster needs, ``distributed`` and (for SLURM) ``dask_jobqueue``;
        a missing one is a one-line :class:`EnvironmentFault` naming the extra to install."""
        distributed = require("distributed", "dask[distributed]", "--executor dask")
        if self._slurm is None:
            return distributed, None
        return distributed, require("dask_jobqueue", "dask-jobqueue", "a SLURM cluster (--slurm)")

    def start(self) -> DaskExecutor:
        """Connect (or start the cluster and connect): a :class:`DaskExecutor`. A missing
        ``distributed`` or ``dask_jobqueue`` is a one-line :class:`EnvironmentFault`."""
        distributed, jobqueue = self.check_installed()
        cluster = None
        if self._slurm is not None:
            cluster = jobqueue.SLURMCluster(**self._slurm.cluster_kwargs())
            cluster.scale(jobs=self._slurm.jobs)
            where = f"SLURM ({self._slurm.jobs} job(s))"
        elif self.scheduler is None:
            n = self.local_workers
            cluster = distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                env=dict(THREAD_ENV),
                silence_logs=logging.ERROR,
            )
            where = f"LocalCluster ({n} workers)"
        else:
            where = self.scheduler
        # the driver's client speaks through SchedulerLost, not through log lines
        logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
        try:
            client = distributed.Client(
                cluster if cluster is not None else self.scheduler,
                timeout=self.connect_timeout,
                set_as_default=False,
            )
        except (OSError, TimeoutError) as err:
            if cluster is not None:
                cluster.close()
            raise EnvironmentFault(
                f"Dask scheduler {self.scheduler or where}",
                f"cannot connect ({type(err).__name__})",
                "check the address and that the scheduler runs (dask scheduler), or use "
                "--dask-workers N for a cluster on this machine",
            ) from None
        return DaskExecutor(client, cluster, where)


def worker_device(device: str, worker_name: object, gpus: int) -> str:
    """The device a Dask worker uses: plain ``cuda`` on a machine with several GPUs becomes
    ``cuda:i`` with ``i`` taken from the worker's name (LocalCluster names its workers 0, 1,
    ...), so each worker has a device of its own; any other name is kept."""
    if device not in ("cuda", "auto") or gpus < 2:
        return device
    name = str(worker_name)
    index = int(name) if name.isdigit() else sum(map(ord, name))
    return f"cuda:{index % gpus}"


def dask_task(fn: TaskFunction, call: TaskCall) -> TaskResult:
    """Run ``fn(call)`` on a Dask worker: one torch thread, the worker's own GPU when the
    machine has several (:func:`worker_device`), the worker's address as its name."""
    from distributed import get_worker

    worker = get_worker()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = worker_device(call.device, worker.name, gpus)
    local = TaskCall(call.experiment, call.spec, call.task, device)
    return fn(local, threads=1, worker=str(worker.address))


class DaskExecutor(Executor):
    """Tasks as ``dask.distributed`` futures of a connected ``client``.

    A worker killed mid-task is the scheduler's business: it reschedules the task on another
    worker (up to ``distributed.scheduler.allowed-failures`` times, then the task fails with
    ``KilledWorker``, recorded as the task's error). A lost connection to the scheduler raises
    :class:`SchedulerLost`.
    """

    def __init__(self, client: Any, cluster: Any = None, where: str = ""):
        self.client, self.cluster, self.where = client, cluster, where or str(client.scheduler)
        self._pending: dict[Any, TaskCall] = {}
        from distributed import as_completed

        self._done = as_completed(loop=client.loop)

    @property
    def slots(self) -> int:
        """Twice the worker threads the scheduler has now (at least 1), so a worker that
        finishes finds its next task waiting; SLURM workers that arrive later count."""
        try:
            threads = sum(self.client.nthreads().values())
        except Exception:  # the scheduler gone: results() reports it
            threads = 0
        return max(1, 2 * threads)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def submit(self, fn: TaskFunction, call: TaskCall) -> None:
        future = self.client.submit(dask_task, fn, call, pure=False)
        self._pending[future] = call
        self._done.add(future)

    def _lost(self) -> bool:
        return self.client.status in ("closing", "closed", "connecting")

    def results(self, timeout: float) -> list[TaskResult]:
        if not self._pending:
            return []
        deadline = time.monotonic() + timeout
        while not self._done.has_ready():
            if self._lost():
                raise SchedulerLost(self.where)
            if time.monotonic() >= deadline:
                return []
            time.sleep(_POLL_S)
        out = []
        for future in self._done.next_batch(block=False):
            call = self._pending.pop(future)
            if future.status == "cancelled" or self._lost():
                raise SchedulerLost(self.where)
            if future.status == "error":
                err = future.exception()
                if type(err).__name__ != "KilledWorker":
                    raise err  # a fault of the environment on the worker: the run stops
                text = " ".join(f"KilledWorker: {err}".split())
                out.append(TaskResult(call.task.key, None, 0.0, "dask", text))
                continue
            out.append(future.result())
        return out

    def stop(self) -> None:
        lost = self._lost()
        if self._pending and not lost:
            with suppress(Exception):
                self.client.cancel(list(self._pending), force=True)
        self._pending.clear()
        if not lost:  # a client that lost its scheduler closes itself after reconnect_s
            self.close()

    def close(self) -> None:
        with suppress(Exception):  # closing a client whose scheduler is gone can raise
            self.client.close(timeout=10)
        if self.cluster is not None:
            with suppress(Exception):
                self.cluster.close(timeout=10)

    def describe(self) -> str:
        return f"dask ({self.where})"
