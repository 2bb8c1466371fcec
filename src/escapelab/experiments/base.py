"""What every experiment provides to the runner: a spec type, tasks, and a pure task function."""

from __future__ import annotations

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
