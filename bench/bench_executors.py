"""Scaling of the executors on this machine, and the single writer's commit rate.

For one width-sweep of ``--tasks`` tasks of one seed each (short training, so that the cost of
moving a task around shows), the wall time of the whole run with the local executor (1 process:
the driver itself; 2 processes: a pool) and with Dask (a LocalCluster of 1 and of 2
single-threaded workers, started before the clock starts), as tasks per second, and the
overhead per task: wall time x workers / tasks minus the mean wall time of a task on its worker
(what the driver, the transport and the scheduler add to each task). Then the rate at which the
driver commits finished tasks to the SQLite store (one transaction each, ``--records`` records
per task, copies of real width-sweep records), the ceiling of any executor.

    python bench/bench_executors.py            # 24 tasks, -> results/executors.json
    python bench/bench_executors.py --quick    # 8 tasks  -> results/executors-quick.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import escapelab
from benchlib import git_info, machine_info
from escapelab.runner.executors import THREAD_ENV, DaskCluster
from escapelab.runner.store import Store


def sweep_spec(tasks: int, steps: int) -> dict[str, Any]:
    """A width-sweep of ``tasks`` tasks (two widths, one seed per task)."""
    return {
        "teachers": 1,
        "teacher": {"width": 2},
        "student": {"widths": [2, 3], "seeds": tasks // 2},
        "train": {"steps": steps, "refine_steps": 5, "certify_rounds": 0},
        "seeds_per_task": 1,
    }


def timed_run(spec: dict[str, Any], workers: int, executor: Any) -> dict[str, Any]:
    """One run on a fresh store: wall time, tasks per second, overhead per task."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = escapelab.run(
            "width-sweep", spec, store=tmp, workers=workers, executor=executor, progress=False
        )
        wall = time.perf_counter() - start
        times = Store(tmp).worker_times(out.spec_hash)
    tasks = sum(n for n, _ in times.values())
    task_mean = sum(t for _, t in times.values()) / tasks
    return {
        "tasks": tasks,
        "wall_s": round(wall, 3),
        "tasks_per_s": round(tasks / wall, 3),
        "mean_task_s_on_worker": round(task_mean, 4),
        "overhead_per_task_s": round(wall * workers / tasks - task_mean, 4),
        "workers_seen": len(times),
    }


def dask_run(spec: dict[str, Any], workers: int) -> dict[str, Any]:
    """A timed run on a LocalCluster of ``workers`` started (and timed) beforehand."""
    import distributed

    start = time.perf_counter()
    with distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env=dict(THREAD_ENV),
    ) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(workers)
        startup = time.perf_counter() - start
        warm = DaskCluster(scheduler=cluster.scheduler_address)
        timed_run(sweep_spec(2 * workers, 10), workers, warm)  # imports on every worker
        result = timed_run(spec, workers, warm)
    return {**result, "cluster_startup_s": round(startup, 2)}


def commit_rate(records_per_task: int, commits: int) -> dict[str, Any]:
    """Tasks per second the single writer commits, each task in its own transaction."""
    with tempfile.TemporaryDirectory() as tmp:
        sample = escapelab.run("width-sweep", sweep_spec(2, 10), store=tmp, progress=False)
        record = {k: v for k, v in sample.records[0].items() if k != "task"}
    records = [dict(record, member=i) for i in range(records_per_task)]
    size = len(json.dumps(records))
    with tempfile.TemporaryDirectory() as tmp:
        db = Store(tmp)
        db.register("width-sweep", {}, "bench", escapelab.__version__)
        start = time.perf_counter()
        for i in range(commits):
            db.save_task("bench", f"k{i:06d}", records, 1.0, escapelab.__version__, "bench")
        wall = time.perf_counter() - start
    return {
        "records_per_task": records_per_task,
        "bytes_per_task": size,
        "commits": commits,
        "tasks_per_s": round(commits / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 tasks, 200 commits")
    parser.add_argument("--tasks", type=int, default=24)
    parser.add_argument("--steps", type=int, default=100, help="training steps per task")
    parser.add_argument("--records", type=int, default=48, help="records per committed task")
    args = parser.parse_args()
    tasks, commits = (8, 200) if args.quick else (args.tasks, 1000)
    torch.set_num_threads(1)
    spec = sweep_spec(tasks, args.steps)
    timed_run(sweep_spec(2, 10), 1, "local")  # warm-up: imports, data
    results: dict[str, Any] = {
        "local_1_process": timed_run(spec, 1, "local"),
        "local_2_processes": timed_run(spec, 2, "local"),
        "dask_1_worker": dask_run(spec, 1),
        "dask_2_workers": dask_run(spec, 2),
        "store_commits": commit_rate(args.records, commits),
    }
    out = {
        "benchmark": "executors",
        "spec": spec,
        "machine": machine_info(),
        **git_info(),
        "results": results,
    }
    name = "executors-quick.json" if args.quick else "executors.json"
    path = Path(__file__).resolve().parent / "results" / name
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
