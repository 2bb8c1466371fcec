"""E2, the strong multi-start test: does the full network succeed because a ticket exists?

For every width-m student (m > r*), each width-r* sub-network — a subset of hidden units with
their incoming and outgoing weights at initialization — is trained in isolation, as extra ensemble
members, with the same training and classification as the full network. A sub-network that
reaches the global minimum is a winning neuron-level ticket. Per width the result is the 2x2 table
"a winning sub-network exists at init" x "the full network reaches the global minimum"; the
literal lottery picture predicts that the two off-diagonal cells are empty:

* ``success_without_ticket`` — the full network succeeds although no sub-network can;
* ``failure_with_ticket``    — a winning ticket is present, yet the full network fails.

When C(m, r*) exceeds ``max_subsets`` a seeded uniform sample of distinct subsets is used (the
same subsets for every member of that width) and the output says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from escapelab.config import constraint
from escapelab.experiments.base import Task
from escapelab.experiments.kits.teacher_student import (
    StudentSpec,
    TeacherSpec,
    TeacherStudentSpec,
    check_wider_than_teacher,
    per_teacher,
    task_spec,
    train_students,
    train_subsets,
    width_tasks,
)
from escapelab.theory.multistart import wilson_interval

CELLS = (
    "success_with_ticket",
    "success_without_ticket",
    "failure_with_ticket",
    "failure_without_ticket",
)


@dataclass(frozen=True)
class SubnetworkSpec(TeacherStudentSpec):
    """Full students of the widths in ``student.widths`` and all (or sampled) width-r* subsets."""

    # a five-unit teacher: wide enough that students fail despite a winning sub-network
    teacher: TeacherSpec = field(default_factory=lambda: TeacherSpec(width=5))
    student: StudentSpec = field(default_factory=lambda: StudentSpec(widths=(6, 7, 8), seeds=24))
    max_subsets: int = field(default=70, metadata=constraint(ge=1))
    subset_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_wider_than_teacher(self)


class Subnetworks:
    """The ``subnetworks`` experiment (E2: sub-network contingency table)."""

    name = "subnetworks"
    spec_type = SubnetworkSpec
    description = "does a winning width-r* sub-network at init explain the full network's success?"

    def tasks(self, spec: SubnetworkSpec) -> list[Task]:
        return width_tasks(spec)

    def run_task(
        self, spec: SubnetworkSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        m, lo, hi = task.params["m"], task.params["lo"], task.params["hi"]
        spec = task_spec(spec, task)
        run = train_students(spec, m, lo, hi, device)
        full, full_ep = run.result, run.endpoints
        subs = train_subsets(spec, run.arch, run.theta0, spec.max_subsets, spec.subset_seed, device)
        subsets, sampled, k = subs.subsets, subs.sampled, len(subs.subsets)
        records = []
        for i, ep in enumerate(full_ep):
            mine, winning = subs.member(i), subs.winning(i)
            records.append(
                {
                    "teacher": spec.teacher.seed,
                    "width": m,
                    "member": lo + i,
                    **ep.to_dict(),
                    "n_subsets": k,
                    "subsets_sampled": sampled,
                    "n_winning": len(winning),
                    "winning_subsets": [list(subsets[s]) for s in winning],
                    "subset_losses": [e.loss for e in mine],
                    "wall_time": full.wall_time / max(1, hi - lo),
                }
            )
        return records

    def summarize(
        self, spec: SubnetworkSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Per teacher and width, :func:`contingency`; with several teachers also ``pooled``
        rows: the same table over all teachers' members (the cells are counts)."""
        rows = per_teacher(spec, records, lambda _, mine: contingency(mine))
        if rows and "teacher" in rows[0]:
            rows += [{"teacher": "pooled", **row} for row in contingency(records)]
        return rows

    def figures(
        self, spec: SubnetworkSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.figures import plot_contingency

        rows = self.summarize(spec, records)
        pooled = [r for r in rows if r.get("teacher") == "pooled"]
        teachers = f"{spec.teachers} teachers" if pooled else "teacher"
        title = (
            f"width-{spec.teacher.width} sub-networks trained alone; {teachers} r*="
            f"{spec.teacher.width}, d={spec.teacher.d}"
        )
        path = out_dir / "subnetwork_contingency.png"
        return [plot_contingency(pooled or rows, CELLS, path, title)]


def contingency(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per width: the 2x2 contingency table, P(full success), P(a ticket exists), and how
    the full networks that failed ended (bad minimum or out of budget)."""
    rows = []
    for m in sorted({int(r["width"]) for r in records}):
        mine = [r for r in records if r["width"] == m]
        success = [r["kind"] == "global_min" for r in mine]
        ticket = [r["n_winning"] > 0 for r in mine]
        cells = {
            "success_with_ticket": sum(s and t for s, t in zip(success, ticket, strict=True)),
            "success_without_ticket": sum(
                s and not t for s, t in zip(success, ticket, strict=True)
            ),
            "failure_with_ticket": sum(t and not s for s, t in zip(success, ticket, strict=True)),
            "failure_without_ticket": sum(
                not (s or t) for s, t in zip(success, ticket, strict=True)
            ),
        }
        n = len(mine)
        lo, hi = wilson_interval(sum(success), n)
        rows.append(
            {
                "width": m,
                "n": n,
                "subsets_per_member": mine[0]["n_subsets"],
                "subsets_sampled": any(r["subsets_sampled"] for r in mine),
                "p_full_success": sum(success) / n,
                "ci_low": lo,
                "ci_high": hi,
                "p_ticket_exists": sum(ticket) / n,
                # how the full network failed: a bad minimum, or out of budget
                "full_bad_min": sum(r["kind"] == "local_min" for r in mine),
                "full_not_converged": sum(r["kind"] == "not_converged" for r in mine),
                **cells,
            }
        )
    return rows
