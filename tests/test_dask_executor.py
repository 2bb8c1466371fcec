"""The Dask executor with real processes: a LocalCluster of 2 single-threaded workers gives the
records the local executor gives; a worker SIGKILLed mid-task has its task rerun elsewhere and
every record is stored exactly once; a task that raises is logged and retried alone; a lost
scheduler stops the run with one line and a rerun resumes from the store."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.usefixtures("single_thread")

import escapelab  # noqa: E402
from escapelab.runner.executors import THREAD_ENV, DaskCluster  # noqa: E402
from escapelab.runner.store import DB_NAME, Store  # noqa: E402

SRC = Path(escapelab.__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

# 6 tasks of one seed, about a second each on one thread
SWEEP = {
    "teachers": 1,
    "teacher": {"width": 2},
    "student": {"widths": [2, 3], "seeds": 3},
    "train": {"steps": 300, "refine_steps": 5, "certify_rounds": 0},
    "seeds_per_task": 1,
}
LOTTERY = {
    "data": {"datasets": ["digits"]},
    "net": {"hidden": [16]},
    "fit": {"steps": 40, "eval_every": 10, "batch_size": 50},
    "imp": {"levels": 2},
    "seeds": 2,
    "seeds_per_task": 1,
}


def _science(records: list[dict]) -> list[tuple]:
    """Records without their timings, sorted, for comparison across executors."""
    return sorted(
        tuple(
            sorted(
                (k, json.dumps(v)) for k, v in r.items() if k != "wall_time" and "seconds" not in k
            )
        )
        for r in records
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two worker processes of one thread each, as `--dask-workers 2` makes them."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env=dict(THREAD_ENV),
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: distributed.LocalCluster) -> Iterator[distributed.Client]:
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c


def _on_cluster(cluster: distributed.LocalCluster) -> DaskCluster:
    return DaskCluster(scheduler=cluster.scheduler_address)


@pytest.mark.parametrize(("name", "spec"), [("width-sweep", SWEEP), ("lottery", LOTTERY)])
def test_records_are_those_of_the_local_executor(
    tmp_path: Path, cluster, client, name: str, spec: dict
) -> None:
    local = escapelab.run(name, spec, store=tmp_path / "local", progress=False)
    dask = escapelab.run(
        name, spec, store=tmp_path / "dask", progress=False, executor=_on_cluster(cluster)
    )
    assert dask.spec_hash == local.spec_hash and dask.tasks_run == local.tasks_run > 1
    assert _science(dask.records) == _science(local.records)
    workers = Store(tmp_path / "dask").worker_times(dask.spec_hash)
    assert set(workers) <= set(client.scheduler_info()["workers"])
    assert sum(n for n, _ in workers.values()) == dask.tasks_run
    again = escapelab.run(
        name, spec, store=tmp_path / "dask", progress=False, executor=_on_cluster(cluster)
    )
    assert (again.tasks_run, again.tasks_skipped) == (0, dask.tasks_run)


def _thread_settings() -> dict:
    import torch

    return {**{k: os.environ.get(k) for k in THREAD_ENV}, "torch": torch.get_num_threads()}


def test_workers_run_one_thread(client) -> None:
    settings = client.run(_thread_settings)
    assert len(settings) == 2
    for values in settings.values():
        assert values == {**{k: "1" for k in THREAD_ENV}, "torch": 1}


def _fail_one_task(key: str) -> None:
    """Patch, in a worker process, the task runner to raise for task ``key``."""
    from escapelab.runner import sweep

    real = getattr(sweep, "_real_run_one", sweep._run_one)
    sweep._real_run_one = real

    def run_one(name, spec, task, device):
        if task.key == key:
            raise RuntimeError("boom on a worker")
        return real(name, spec, task, device)

    sweep._run_one = run_one


def _restore() -> None:
    from escapelab.runner import sweep

    sweep._run_one = getattr(sweep, "_real_run_one", sweep._run_one)


def test_a_failing_task_on_a_worker_is_logged_and_retried(tmp_path: Path, cluster, client) -> None:
    bad = "m=0003/seeds=00001-00001"
    client.run(_fail_one_task, bad)
    try:
        first = escapelab.run(
            "width-sweep", SWEEP, store=tmp_path, progress=False, executor=_on_cluster(cluster)
        )
    finally:
        client.run(_restore)
    assert first.tasks_run == 5 and len(first.records) == 5
    assert [(f.key, f.error) for f in first.failures] == [(bad, "RuntimeError: boom on a worker")]
    assert first.failures[0].worker.startswith("tcp://")
    again = escapelab.run(
        "width-sweep", SWEEP, store=tmp_path, progress=False, executor=_on_cluster(cluster)
    )
    assert (again.tasks_run, again.tasks_skipped, again.failures) == (1, 5, ())
    assert len(again.records) == 6


def _done_attempts(store: Path) -> list[str]:
    with sqlite3.connect(store / DB_NAME) as conn:
        return [r[0] for r in conn.execute("SELECT key FROM attempts WHERE status = 'done'")]


def test_a_worker_killed_mid_task_is_retried_and_every_record_stored_once(
    tmp_path: Path, cluster, client
) -> None:
    pids = client.run(os.getpid)
    killed: list[str] = []

    def kill_a_busy_worker() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                time.sleep(0.3)  # inside its first task (each takes about a second)
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    out = escapelab.run(
        "width-sweep", SWEEP, store=tmp_path, progress=False, executor=_on_cluster(cluster)
    )
    killer.join()
    assert killed, "no worker was killed"
    assert out.failures == () and out.tasks_run == 6
    keys = [(r["width"], r["member"]) for r in out.records]
    assert sorted(keys) == [(m, i) for m in (2, 3) for i in range(3)]
    done = _done_attempts(tmp_path)
    assert sorted(done) == sorted(set(done)) and len(done) == 6  # each task stored once
    reference = escapelab.run("width-sweep", SWEEP, store=tmp_path / "ref", progress=False)
    assert _science(out.records) == _science(reference.records)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stored(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store / DB_NAME}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow  # a scheduler and a worker of their own: about 40 s on a busy 2-core machine
def test_a_lost_scheduler_stops_the_run_in_one_line_and_a_rerun_resumes(tmp_path: Path) -> None:
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS)]), **THREAD_ENV}
    scheduler = subprocess.Popen(
        [
            *(sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"),
            *("--port", str(port), "--dashboard-address", ":0", "--no-show"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1"),
            *("--nworkers", "1", "--no-dashboard"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store, config = tmp_path / "store", tmp_path / "spec.json"
    config.write_text(json.dumps(SWEEP))
    try:
        with distributed.Client(address, timeout=60, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=60)
        driver = subprocess.Popen(
            [
                *(sys.executable, "-m", "escapelab.cli", "run", "width-sweep", "--config"),
                *(str(config), "--store", str(store), "--no-progress", "--executor", "dask"),
                *("--scheduler", address),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 120
        while _stored(store) < 1 and time.time() < deadline and driver.poll() is None:
            time.sleep(0.05)
        scheduler.send_signal(signal.SIGKILL)
        _, err = driver.communicate(timeout=120)
    finally:
        for proc in (scheduler, worker):
            proc.kill()
            proc.wait()
    assert driver.returncode == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: Dask scheduler {address}: connection lost"), lines
    assert "rerun the same command to resume" in lines[0]
    stored = _stored(store)
    assert 1 <= stored < 6
    resumed = escapelab.run("width-sweep", SWEEP, store=store, progress=False)
    assert (resumed.tasks_skipped, resumed.tasks_run) == (stored, 6 - stored)
    assert sorted((r["width"], r["member"]) for r in resumed.records) == [
        (m, i) for m in (2, 3) for i in range(3)
    ]


@pytest.mark.slow  # a LocalCluster of its own: about 45 s on a busy 2-core machine
def test_the_cli_starts_a_local_cluster(tmp_path: Path) -> None:
    """`--executor dask --dask-workers 2`: a LocalCluster made and closed by the run."""
    config = tmp_path / "spec.json"
    config.write_text(json.dumps(LOTTERY))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "escapelab.cli", "run", "lottery", "--config", str(config)),
            *("--store", str(tmp_path / "s"), "--no-progress", "--executor", "dask"),
            *("--dask-workers", "2"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "2 task(s) run, 0 already stored, 14 records" in done.stdout
    workers = Store(tmp_path / "s").worker_times(Store(tmp_path / "s").experiments()[0].hash)
    assert sum(n for n, _ in workers.values()) == 2
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers)
