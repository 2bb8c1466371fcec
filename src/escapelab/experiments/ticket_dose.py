"""E3 with power: the dose–response curve of winning tickets under perturbation.

``ticket-perturbation`` tests a handful of perturbations on a few tickets; its intervals are too
wide to tell a failure rate from the noise floor. ``ticket-dose`` runs the same tickets
(:mod:`escapelab.experiments.kits.tickets`: neuron-level tickets of teacher–student students
over several teachers, weight-level IMP tickets over many seeds) under a fine grid of doses —
the rest of the network scaled by alpha, or given noise of size sigma
(:mod:`escapelab.tickets.perturb`) — and reports, per dose, the failure rate against the floor
(:mod:`escapelab.tickets.dose_response`):

* **neuron level**: a ticket *fails* when its full network ends at a certified non-global
  critical point or channel (``local_min``, ``saddle``, ``flat_channel``); one out of budget or
  diverged is *undecided* and counted apart. The floor is the unperturbed network
  (perturbation ``none``): full-batch training is deterministic, so retraining the same
  initialization gives the same endpoint, and the floor is the share of winning tickets whose
  full network fails anyway (E2's "ticket but failed");
* **weight level**: a winning IMP ticket fails when its test accuracy falls more than ``margin``
  below the same seed's unperturbed run, or training diverges. The floor is the unperturbed
  network retrained with another batch order (``reshuffle``), the rate at which the criterion
  "fails" when nothing but the trajectory's noise changed; the unperturbed run itself is the
  reference and fails by definition never, so it gets no row.

Summary rows (``role``): ``floor`` and ``dose`` per ticket kind and problem (pooled over the
neuron level's teachers), with Wilson intervals, their half-widths against
``target_half_width``, the difference from the floor with Newcombe's interval and the failures
by class. Every ticket runs under the floor and under every dose, so the difference is paired
per ticket (:func:`escapelab.tickets.dose_response.paired_newcombe_interval`), with the tickets
that failed under the dose only (``broken_pairs``) and under the floor only (``mended_pairs``);
``threshold`` per arm (scale down, scale up, noise): the first dose whose difference from the
floor lies above 0, or none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from escapelab.config import constraint
from escapelab.experiments.kits.neuron_tickets import NO_TICKET, NeuronTicketSpec
from escapelab.experiments.kits.tickets import (
    KINDS,
    TicketTasks,
    check_kinds,
)
from escapelab.experiments.kits.weight_tickets import RESHUFFLE, WeightTicketSpec
from escapelab.tickets.dose_response import (
    TARGET_HALF_WIDTH,
    Pairs,
    Tally,
    dose_rows,
    rate_columns,
    threshold_rows,
)
from escapelab.tickets.perturb import PerturbationSpec

# the grid: alpha from 0 (the rest removed) through 1 (unchanged, the floor) to 8; sigma to 8
SCALES = (0.0, 0.25, 0.5, 0.75, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
NOISE = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
# neuron level: what a failure is, and what is neither failure nor success
FAILURE_CLASSES = ("local_min", "saddle", "flat_channel")
UNDECIDED_CLASSES = ("not_converged", "diverged")


@dataclass(frozen=True)
class TicketDoseSpec:
    """Which ticket kinds, the doses (``perturb``; no re-draw by default: it has no size), each
    kind's settings, and the half-width each dose's 95 % interval should reach."""

    kinds: tuple[Literal["neuron", "weight"], ...] = KINDS
    perturb: PerturbationSpec = field(
        default_factory=lambda: PerturbationSpec(redraw=False, scales=SCALES, noise=NOISE)
    )
    neuron: NeuronTicketSpec = field(default_factory=lambda: NeuronTicketSpec(teachers=4))
    # twice ticket-perturbation's seeds, in two tasks so that two workers share them
    weight: WeightTicketSpec = field(
        default_factory=lambda: WeightTicketSpec(seeds=24, seeds_per_task=12)
    )
    target_half_width: float = field(
        default=TARGET_HALF_WIDTH,
        metadata=constraint(gt=0, le=0.5, help="half-width of the 95 % interval per dose"),
    )

    def __post_init__(self) -> None:
        check_kinds(self.kinds)


def _neuron_outcome(record: dict[str, Any]) -> str | None:
    """A neuron-level record's class for :class:`Tally`: its endpoint class, None if undecided."""
    return None if record["kind"] in UNDECIDED_CLASSES else record["kind"]


def _weight_outcome(record: dict[str, Any]) -> str:
    if record["success"]:
        return "success"
    return "diverged" if record["diverged"] else "accuracy_drop"


def _ticket(record: dict[str, Any]) -> tuple[Any, int]:
    """The ticket a record belongs to: (teacher, member) at the neuron level, (None, member) at
    the weight level."""
    return record.get("teacher"), int(record["member"])


def _failed(outcome: str | None, failure_kinds: tuple[str, ...]) -> bool | None:
    """Whether a ticket's outcome is a failure; None when it is undecided."""
    return None if outcome is None else outcome in failure_kinds


def _problem_rows(
    spec: TicketDoseSpec,
    head: dict[str, Any],
    runs: list[dict[str, Any]],
    floor_label: str,
    outcome: Any,
    failure_kinds: tuple[str, ...],
) -> list[dict[str, Any]]:
    """The floor, dose and threshold rows of one ticket kind and problem from its ticket
    records ``runs`` (grid order). Each ticket ran under the floor and under every dose, so the
    differences are paired per ticket."""
    target = spec.target_half_width
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_label.setdefault(r["label"], []).append(r)
    floor_runs = by_label.get(floor_label, [])
    floor = Tally.of((outcome(r) for r in floor_runs), failure_kinds)
    floor_failed = {_ticket(r): _failed(outcome(r), failure_kinds) for r in floor_runs}
    rows = [{**head, "role": "floor", "label": floor_label, **rate_columns(floor, target)}]
    doses, pairs, labels = [], [], []
    for label, mine in by_label.items():
        kind, size = mine[0]["perturbation"], float(mine[0]["size"])
        if label == floor_label or kind in ("none", RESHUFFLE):
            continue
        doses.append((kind, size, Tally.of((outcome(r) for r in mine), failure_kinds)))
        failed = {_ticket(r): _failed(outcome(r), failure_kinds) for r in mine}
        pairs.append(Pairs.of(failed, floor_failed))
        labels.append(label)
    rows += [
        {**head, "role": "dose", "label": label, **row}
        for label, row in zip(labels, dose_rows(doses, floor, target, pairs), strict=True)
    ]
    dosed = [r for r in rows if r["role"] == "dose"]
    rows += [{**head, "role": "threshold", **t} for t in threshold_rows(dosed)]
    return rows


class TicketDose(TicketTasks):
    """The ``ticket-dose`` experiment (E3 with power)."""

    name = "ticket-dose"
    spec_type = TicketDoseSpec
    description = "dose-response of winning tickets under perturbation, against the noise floor"

    def summarize(
        self, spec: TicketDoseSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Floor, dose and threshold rows per ticket kind and problem (see the module)."""
        rows = []
        neuron = [r for r in records if r["ticket_kind"] == "neuron"]
        r_star = spec.neuron.teacher.width
        for m in sorted({int(r["width"]) for r in neuron}):
            mine = [r for r in neuron if r["width"] == m]
            head = {
                "ticket_kind": "neuron",
                "problem": f"teacher-student r*={r_star} m={m}",
                "teachers": len({r["teacher"] for r in mine}),
                "members": len({(r["teacher"], r["member"]) for r in mine}),
                "no_ticket": sum(r["perturbation"] == NO_TICKET for r in mine),
            }
            runs = [r for r in mine if r["perturbation"] != NO_TICKET]
            rows += _problem_rows(spec, head, runs, "none", _neuron_outcome, FAILURE_CLASSES)
        weight = [r for r in records if r["ticket_kind"] == "weight"]
        for dataset in dict.fromkeys(r["dataset"] for r in weight):
            mine = [r for r in weight if r["dataset"] == dataset]
            head = {
                "ticket_kind": "weight",
                "problem": dataset,
                "teachers": None,
                "members": len({r["member"] for r in mine}),
                "no_ticket": len({r["member"] for r in mine if not r["winning"]}),
            }
            runs = [r for r in mine if r["winning"]]
            floor = next((r["label"] for r in mine if r["perturbation"] == RESHUFFLE), RESHUFFLE)
            failure_kinds = ("accuracy_drop", "diverged")
            rows += _problem_rows(spec, head, runs, floor, _weight_outcome, failure_kinds)
        return rows

    def figures(
        self, spec: TicketDoseSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.ticket_dose_figures import plot_dose

        rows = self.summarize(spec, records)
        return [plot_dose(rows, out_dir / "ticket_dose.png")] if rows else []
