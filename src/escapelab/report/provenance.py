"""Where and with what a run was computed: recorded beside its results, shown on its page.

Every call of :func:`escapelab.runner.sweep.run` that ran tasks appends one JSON line to
``<store>/<hash>/provenance.jsonl``: the date, the escapelab version and git commit (when the
package sits in a git checkout), Python and torch versions, the machine, the device, the number of
workers and tasks. A run resumed on another machine thus lists both. Runs stored before this file
existed simply have none; their page says so.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

PROVENANCE_NAME = "provenance.jsonl"


def _git(where: Path, *args: str) -> str:
    """The stripped output of ``git *args`` run in ``where`` (raises if git fails)."""
    done = subprocess.run(
        ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the git checkout holding ``path`` (default: this package), with ``+dirty``
    when it has uncommitted changes; None outside a checkout or without git."""
    where = path or Path(__file__).resolve().parent
    try:
        commit = _git(where, "rev-parse", "--short=12", "HEAD")
        dirty = _git(where, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def machine() -> str:
    """A short description of this machine: host, OS, processor and CPU count."""
    cpu = platform.processor() or platform.machine()
    system = f"{platform.system()} {platform.release()}"
    return f"{platform.node()} ({system}, {cpu}, {os.cpu_count()} CPUs)"


def provenance(device: str, workers: int, tasks_run: int, wall_time: float) -> dict[str, Any]:
    """What :func:`record` writes for one call of the runner."""
    import torch

    from escapelab import __version__

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "escapelab": __version__,
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": machine(),
        "device": device,
        "workers": workers,
        "tasks_run": tasks_run,
        "wall_time": wall_time,
    }


def record(run_dir: Path, entry: dict[str, Any]) -> Path:
    """Append ``entry`` as one JSON line to ``run_dir``/provenance.jsonl (folder created)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / PROVENANCE_NAME
    with path.open("a") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return path


def read(run_dir: Path) -> list[dict[str, Any]]:
    """Every entry :func:`record` wrote for a run, oldest first ([] when none); lines that do
    not parse (a write cut short) are skipped."""
    path = run_dir / PROVENANCE_NAME
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


__all__ = ["PROVENANCE_NAME", "git_commit", "machine", "provenance", "read", "record"]
