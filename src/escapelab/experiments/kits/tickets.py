"""Both halves of the perturbation test (E3) as one: the tasks and the records of a spec that
names its ticket ``kinds`` (neuron, weight) and has a ``neuron`` and a ``weight`` section.

``ticket-perturbation`` and ``ticket-dose`` run exactly these tasks; they differ in the
perturbation grid they pass and in how they summarize the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from escapelab.config import SpecError
from escapelab.experiments.base import Task
from escapelab.experiments.kits.neuron_tickets import NeuronTicketSpec, neuron_ticket_records
from escapelab.experiments.kits.teacher_student import task_spec, width_tasks
from escapelab.experiments.kits.weight_tickets import (
    WeightTicketSpec,
    weight_ticket_records,
    weight_ticket_tasks,
)
from escapelab.tickets.perturb import Perturbation

KINDS = ("neuron", "weight")


def check_kinds(kinds: Sequence[str]) -> None:
    """SpecError on ``kinds`` unless it names each of neuron, weight at most once (and one)."""
    if not kinds or len(set(kinds)) != len(kinds):
        raise SpecError("kinds", f"name each of neuron, weight at most once, got {kinds}")


def ticket_tasks(
    kinds: Sequence[str], neuron: NeuronTicketSpec, weight: WeightTicketSpec
) -> list[Task]:
    """Neuron-level tasks (one per teacher, width and block of seeds) when ``kinds`` names
    ``neuron``, then weight-level ones (one per dataset and block of seeds) for ``weight``."""
    tasks = []
    if "neuron" in kinds:
        tasks += width_tasks(neuron, label="neuron/m", ticket_kind="neuron")
    if "weight" in kinds:
        tasks += weight_ticket_tasks(weight)
    return tasks


def ticket_task_records(
    neuron: NeuronTicketSpec,
    weight: WeightTicketSpec,
    grid: list[Perturbation],
    task: Task,
    device: torch.device,
) -> list[dict[str, Any]]:
    """The records of one task of :func:`ticket_tasks` under the perturbations ``grid``."""
    if task.params["ticket_kind"] == "weight":
        return weight_ticket_records(weight, grid, task, device)
    p = task.params
    return neuron_ticket_records(task_spec(neuron, task), grid, p["m"], p["lo"], p["hi"], device)
