"""Both halves of the perturbation test (E3) as one: the tasks and the records of a spec that
names its ticket ``kinds`` (neuron, weight) and has a ``neuron`` and a ``weight`` section.

``ticket-perturbation`` and ``ticket-dose`` run exactly these tasks (:class:`TicketTasks`);
they differ in their perturbation grids and in how they summarize the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from escapelab.config import SpecError
from escapelab.experiments.base import Task
from escapelab.experiments.kits.neuron_tickets import neuron_ticket_records
from escapelab.experiments.kits.teacher_student import task_spec, width_tasks
from escapelab.experiments.kits.weight_tickets import weight_ticket_records, weight_ticket_tasks

KINDS = ("neuron", "weight")


def check_kinds(kinds: Sequence[str]) -> None:
    """SpecError on ``kinds`` unless it names each of neuron, weight at most once (and one)."""
    if not kinds or len(set(kinds)) != len(kinds):
        raise SpecError("kinds", f"name each of neuron, weight at most once, got {kinds}")


class TicketTasks:
    """The tasks and the records of an experiment whose spec has ``kinds``, ``perturb`` (a
    :class:`~escapelab.tickets.perturb.PerturbationSpec`), ``neuron`` and ``weight``: neuron-level
    tasks (one per teacher, width and block of seeds), then weight-level ones (one per dataset
    and block of seeds), each run under every perturbation of ``perturb.grid()``. The
    experiments subclass it and summarize the records their own way."""

    def tasks(self, spec: Any) -> list[Task]:
        tasks = []
        if "neuron" in spec.kinds:
            tasks += width_tasks(spec.neuron, label="neuron/m", ticket_kind="neuron")
        if "weight" in spec.kinds:
            tasks += weight_ticket_tasks(spec.weight)
        return tasks

    def run_task(self, spec: Any, task: Task, device: torch.device) -> list[dict[str, Any]]:
        grid = spec.perturb.grid()
        if task.params["ticket_kind"] == "weight":
            return weight_ticket_records(spec.weight, grid, task, device)
        p = task.params
        neuron = task_spec(spec.neuron, task)
        return neuron_ticket_records(neuron, grid, p["m"], p["lo"], p["hi"], device)
