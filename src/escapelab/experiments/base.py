"""What every experiment provides to the runner (a spec type, tasks, a pure task function) and
the one task builder they share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" picks CUDA when available, else the CPU; anything else is passed to torch."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available; use auto or cpu")
    return dev


def seed_tasks(
    groups: Iterable[tuple[str, dict[str, Any]]], seeds: int, per_task: int
) -> list[Task]:
    """One task per group and block of ``per_task`` seeds (0: all seeds in one block).

    ``groups`` are (label, params) pairs, e.g. ``("m=0004", {"m": 4})`` for one student width or
    ``("data=digits", {"dataset": "digits"})``; every task's params are the group's plus the seed
    range [``lo``, ``hi``), and its key is :func:`seed_block_key`, the form the
    runner reads back to know which seeds of a group are stored.
    """
    block = per_task or seeds
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
