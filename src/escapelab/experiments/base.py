"""What every experiment provides to the runner (a spec type, tasks, a pure task function) and
the one task builder they share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from escapelab.config import SpecError


@dataclass(frozen=True)
class Task:
    """An independent unit of work; ``key`` names it in the store, ``params`` say what to do.

    ``checkpoint_dir``: a directory the runner gives the task for its own checkpoints (long
    tasks such as IMP resume from it; it is kept, so trained tickets can be loaded later); None
    when the task runs outside a store.
    """

    key: str
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint_dir: str | None = None


class Experiment(Protocol):
    """An experiment: Spec -> tasks -> run_task -> records -> summary and figures."""

    name: str
    spec_type: type
    description: str

    def tasks(self, spec: Any) -> list[Task]: ...

    def run_task(self, spec: Any, task: Task, device: torch.device) -> list[dict[str, Any]]: ...

    def summarize(self, spec: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def figures(self, spec: Any, records: list[dict[str, Any]], out_dir: Path) -> list[Path]: ...


def available_devices() -> list[str]:
    """The device names torch offers here: ``cpu``, then ``cuda`` and ``cuda:N`` for each GPU,
    then ``mps`` on Apple silicon."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" picks CUDA when available, else the CPU; any other name must be one of
    :func:`available_devices` (SpecError naming ``--device`` and the list otherwise)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    offered = available_devices()
    name = str(device).strip().lower()
    if name not in offered:
        raise SpecError("--device", f"must be one of auto, {', '.join(offered)}; got {device!r}")
    return torch.device(name)


# More tasks than this is a typo, not a plan: every task is a row in the store and a job to schedule
MAX_TASKS = 100_000


def check_task_count(groups: int, seeds: int, per_task: int) -> None:
    """Refuse (SpecError) a plan of more than :data:`MAX_TASKS` tasks: ``groups`` groups of
    ``seeds`` seeds in blocks of ``per_task`` (0: one block). Call it before building the
    groups when their number comes from the spec (a typo such as ``teachers=10**9`` must not
    allocate a billion groups first)."""
    block = per_task or seeds
    count = groups * -(-seeds // block)
    if count > MAX_TASKS:
        raise SpecError(
            "seeds_per_task",
            f"{count:,} tasks planned ({groups:,} groups x {seeds:,} seeds in blocks of "
            f"{block:,}), more than the limit of {MAX_TASKS:,}; raise seeds_per_task (0: one "
            "task per group), or lower the seeds or the groups (teachers, widths, problems)",
        )


def seed_tasks(
    groups: Iterable[tuple[str, dict[str, Any]]], seeds: int, per_task: int
) -> list[Task]:
    """One task per group and block of ``per_task`` seeds (0: all seeds in one block).

    ``groups`` are (label, params) pairs, e.g. ``("m=0004", {"m": 4})`` for one student width or
    ``("data=digits", {"dataset": "digits"})``; every task's params are the group's plus the seed
    range [``lo``, ``hi``), and its key is :func:`seed_block_key`, the form the
    runner reads back to know which seeds of a group are stored. More than :data:`MAX_TASKS`
    tasks is refused (SpecError) before any is built.
    """
    block = per_task or seeds
    groups = list(groups)
    check_task_count(len(groups), seeds, per_task)
    return [
        Task(
            seed_block_key(label, lo, min(lo + block, seeds)),
            {**params, "lo": lo, "hi": min(lo + block, seeds)},
        )
        for label, params in groups
        for lo in range(0, seeds, block)
    ]


_SEEDS = re.compile(r"^(?P<group>.+)/seeds=(?P<lo>\d+)-(?P<last>\d+)$")


def seed_block_key(group: str, lo: int, hi: int) -> str:
    """The key of the task running seeds lo..hi-1 of ``group``: ``{group}/seeds=LO-LAST``."""
    return f"{group}/seeds={lo:05d}-{hi - 1:05d}"


def seed_range(key: str) -> tuple[str, int, int] | None:
    """(group, lo, hi) of a key made by :func:`seed_block_key` (``hi`` exclusive, as in the
    task's params); None for a key of another form."""
    match = _SEEDS.match(key)
    if match is None:
        return None
    return match["group"], int(match["lo"]), int(match["last"]) + 1
