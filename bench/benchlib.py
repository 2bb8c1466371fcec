"""Helpers the benchmark scripts share (imported as a sibling module: run the scripts directly)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch


def git(*args: str) -> str | None:
    """Output of ``git *args`` run next to this file, or None if git or the checkout is missing."""
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat), else None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    return (user + nice + system + irq + softirq + steal) / ticks


def git_info() -> dict[str, Any]:
    """HEAD's short hash and the files under src/ that differ from it (what was measured)."""
    status = git("status", "--porcelain", "--", "src")
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "src_uncommitted_changes": None if status is None else status.splitlines(),
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo where available, else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = None
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch_version": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "load_average_1min_at_start": load,
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
    }


def timed_run(
    name: str, spec: dict[str, Any], store: str | Path, workers: int
) -> tuple[Any, dict[str, Any]]:
    """Run experiment ``name`` with ``spec`` into ``store`` (resuming; a finished run is only
    read again) and time it: (the run's outcome, the timing fields of a result file).

    The timing covers this invocation (wall seconds, the 1-minute load average before and
    after, since the CPU may be shared) and every invocation that ran tasks of the spec (the
    store's provenance log), so a run resumed after an interruption, or run earlier with
    ``escapelab run`` on the same store, is counted whole.
    """
    from escapelab.report.provenance import read
    from escapelab.runner.sweep import run

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    outcome = run(name, spec, store=store, workers=workers, progress=True)
    wall = time.perf_counter() - start
    invocations = read(Path(outcome.store) / outcome.spec_hash)
    return outcome, {
        "machine": machine_info(),
        **git_info(),
        "spec_hash": outcome.spec_hash,
        "wall_seconds_this_invocation": wall,
        "tasks_run": outcome.tasks_run,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        "wall_seconds_all_invocations": sum(float(e["wall_time"]) for e in invocations),
        "invocations": invocations,
    }
