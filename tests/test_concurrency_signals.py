"""Concurrent runs share the work (claims with leases), and Ctrl-C / SIGTERM stop a run within
about a second with exit 130 / 143, keeping every finished task."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from escapelab.experiments.base import Task
from escapelab.runner import sweep
from escapelab.runner.store import DB_NAME, Store, new_owner

SPEC = {
    "teachers": 1,
    "teacher": {"width": 2},
    "student": {"widths": [2, 3], "seeds": 8},
    "train": {"steps": 400, "refine_steps": 5},
    "seeds_per_task": 1,
}  # 16 tasks


def _cli(config: Path, store: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "escapelab.cli",
        "run",
        "width-sweep",
        "--config",
        str(config),
        "--store",
        str(store),
        "--no-progress",
        *extra,
    ]


def _stored(store: Path) -> int:
    try:  # read-only: connecting must not create an empty file in the store's place
        with sqlite3.connect(f"file:{store / DB_NAME}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_two_processes_share_the_tasks(tmp_path: Path) -> None:
    config, store = tmp_path / "spec.json", tmp_path / "store"
    config.write_text(json.dumps(SPEC))
    procs = [
        subprocess.Popen(_cli(config, store), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = [int(re.search(r"(\d+) task\(s\) run", out.decode())[1]) for out, _ in outputs]
    assert sum(ran) == 16, ran  # every task computed once
    for out, _ in outputs:
        assert ", 16 records" in out.decode()  # both end with the full result
    rows = Store(store).records(Store(store).experiments()[0].hash)
    assert sorted((r["width"], r["member"]) for r in rows) == [
        (m, i) for m in (2, 3) for i in range(8)
    ]


def test_a_dead_claimants_tasks_are_taken_over(tmp_path: Path) -> None:
    """A claim of a process that is gone (this host) or whose lease expired is taken over;
    a live claim is left alone."""
    db = Store(tmp_path)
    db.create()
    tasks = [Task(f"k{i}") for i in range(3)]

    def todo(taken: set[str]) -> list[Task]:
        return [t for t in tasks if t.key not in taken]

    dead = f"{socket.gethostname()}:{2**22 + 12345}:00"  # a pid above Linux's pid_max
    elsewhere = "another-host:1:00"
    assert [t.key for t in db.claim("h", todo, dead, 1, 60)[0]] == ["k0"]
    # the dead claimant's k0 is free at once; the other host's live claim on k0 is respected
    assert [t.key for t in db.claim("h", todo, elsewhere, 1, 60)[0]] == ["k0"]
    me = new_owner()
    claimed, unstored = db.claim("h", todo, me, 3, 60)
    assert [t.key for t in claimed] == ["k1", "k2"] and unstored == 3
    assert db.claim("h", todo, new_owner(), 3, 60) == ([], 3)
    db.save_task("h", "k1", [], 0.0, "test")  # stored: its claim ends with it
    db.release("h", me)  # k2 is free again
    assert db.claim("h", todo, new_owner(), 3, 60) == ([Task("k2")], 2)
    db.renew("h", elsewhere, -1.0)  # the other host's lease on k0 runs out
    assert db.claim("h", todo, new_owner(), 3, 60) == ([Task("k0")], 2)


@pytest.mark.parametrize(
    ("sig", "code", "workers"), [(signal.SIGINT, 130, "1"), (signal.SIGTERM, 143, "2")]
)
def test_signal_stops_fast_and_keeps_finished_tasks(
    tmp_path: Path, sig: int, code: int, workers: str
) -> None:
    config, store = tmp_path / "spec.json", tmp_path / "store"
    config.write_text(json.dumps({**SPEC, "train": {"steps": 4000, "refine_steps": 20}}))
    started = time.perf_counter()
    proc = subprocess.Popen(
        _cli(config, store, "--workers", workers),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while _stored(store) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    sent = time.perf_counter()
    # the start-up and the first task: an upper bound on the task in flight, which a run with
    # one worker finishes before it stops; on a loaded machine both stretch alike
    first = sent - started
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=30)
    elapsed = time.perf_counter() - sent
    # click echoes a newline after ^C; with a pool, Python's resource tracker (a helper process)
    # may warn about the terminated workers' semaphores: neither is escapelab's message
    lines = [
        line
        for line in err.decode().splitlines()
        if line and "resource_tracker" not in line and "leaked semaphore" not in line
    ]
    assert proc.returncode == code, lines
    assert elapsed < 3.0 + first, f"took {elapsed:.1f} s to stop (first task: {first:.1f} s)"
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), lines
    assert "rerun the same command to resume" in lines[0]
    kept = _stored(store)
    assert 1 <= kept < 16
    with sqlite3.connect(store / DB_NAME) as conn:  # the stopped run released its claims
        assert conn.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    print(f"signal {sig}: stopped in {elapsed:.2f} s, {kept} task(s) kept")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_whose_exception_a_finalizer_swallowed_still_stops_the_drive_loop() -> None:
    """Python raises a signal's exception at the next bytecode of the main thread; inside a
    ``__del__`` it is printed as ignored and lost. The received signal is recorded anyway, and
    the loop that drives the tasks stops on it before submitting another task."""

    class SignalsInFinalizer:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # bytecodes for the handler to run on, inside __del__
                pass

    def always_a_task(free: int) -> tuple[list[Task], int]:
        return [Task("t")], 1

    class NoRunner:
        slots, in_flight = 1, 0

        def submit(self, *_: object) -> None:
            raise AssertionError("a task was submitted after the signal")

    with sweep._signals_interrupt() as received:
        finalizer = SignalsInFinalizer()
        del finalizer  # its KeyboardInterrupt is printed as ignored
        assert received == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            sweep._drive(NoRunner(), "width-sweep", {}, "cpu", always_a_task, print, received)
