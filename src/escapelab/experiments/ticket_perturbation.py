"""E3, the perturbation test: do winning tickets keep winning when the rest of the network moves?

The lottery picture says a network succeeds *because* of its winning ticket, so perturbing only
what lies outside the ticket at initialization should not matter. The escape picture says the
rest of the network shapes the path gradient descent takes, so large perturbations should make
winning tickets fail. Two kinds of tickets are tested with the same perturbations
(:mod:`escapelab.tickets.perturb`: re-draw, scale by alpha, add noise of size sigma):

* ``neuron``: width-r* subsets of a teacher-student student's hidden units that reach the global
  minimum alone (:mod:`escapelab.experiments.kits.neuron_tickets`); success = global minimum;
* ``weight``: IMP tickets on real data (:mod:`escapelab.experiments.kits.weight_tickets`);
  success = test accuracy within a margin of the unperturbed run.

The result is the failure rate of winning tickets against the perturbation's size, with Wilson
intervals, and whether the trained networks still use their tickets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from escapelab.experiments.kits.neuron_tickets import NeuronTicketSpec, neuron_ticket_summary
from escapelab.experiments.kits.teacher_student import per_teacher
from escapelab.experiments.kits.tickets import (
    KINDS,
    TicketTasks,
    check_kinds,
)
from escapelab.experiments.kits.weight_tickets import WeightTicketSpec, weight_ticket_summary
from escapelab.tickets.perturb import PerturbationSpec


@dataclass(frozen=True)
class TicketPerturbationSpec:
    """Which ticket kinds to test, the perturbations, and each kind's own settings."""

    kinds: tuple[Literal["neuron", "weight"], ...] = KINDS
    perturb: PerturbationSpec = field(default_factory=PerturbationSpec)
    neuron: NeuronTicketSpec = field(default_factory=NeuronTicketSpec)
    weight: WeightTicketSpec = field(default_factory=WeightTicketSpec)

    def __post_init__(self) -> None:
        check_kinds(self.kinds)


def _neuron_problem(row: dict) -> str:
    """E.g. ``teacher-student m=6`` (``, teacher 3`` with several teachers); takes the row's
    width and teacher out of it."""
    label = f"teacher-student m={row.pop('width')}"
    return label + (f", teacher {row.pop('teacher')}" if "teacher" in row else "")


class TicketPerturbation(TicketTasks):
    """The ``ticket-perturbation`` experiment (E3)."""

    name = "ticket-perturbation"
    spec_type = TicketPerturbationSpec
    description = "winning tickets under perturbation of the rest of the network"

    def summarize(
        self, spec: TicketPerturbationSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """One row per (ticket kind, width or dataset, perturbation): failure rates of winning
        tickets with Wilson intervals and the ticket-use measures."""
        neuron = [r for r in records if r["ticket_kind"] == "neuron"]
        weight = [r for r in records if r["ticket_kind"] == "weight"]
        rows = [
            {"ticket_kind": "neuron", "problem": _neuron_problem(row), **row}
            for row in per_teacher(spec.neuron, neuron, lambda _, mine: neuron_ticket_summary(mine))
        ]
        rows += [
            {"ticket_kind": "weight", "problem": row.pop("dataset"), **row}
            for row in weight_ticket_summary(weight)
        ]
        return rows

    def figures(
        self, spec: TicketPerturbationSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.ticket_figures import plot_perturbation

        rows = self.summarize(spec, records)
        return [plot_perturbation(rows, out_dir / "ticket_perturbation.png")] if rows else []
