"""Oracles for E3 at the neuron level: keep masks, the perturbed runs and their summary."""

from __future__ import annotations

import math

import pytest
import torch

from escapelab.config import SpecError
from escapelab.experiments.kits.neuron_tickets import (
    NO_TICKET,
    NeuronTicketSpec,
    neuron_ticket_records,
    neuron_ticket_summary,
    ticket_overlap,
    unit_contributions,
    unit_keep_mask,
)
from escapelab.experiments.kits.teacher_student import (
    StudentSpec,
    TeacherSpec,
    TrainSpec,
    objective_for,
    student_start,
    train_and_classify,
)
from escapelab.nets.mlp import Architecture
from escapelab.nets.surgery import select_units
from escapelab.tickets.perturb import Perturbation, perturb_outside

CPU = torch.device("cpu")

# A three-unit teacher (seed 1) on d = 2 inputs, students of width 5: every member has a winning
# 3-subset, the unperturbed students all succeed within 2000 Adam steps, and scaling the rest by
# 8 sends several of them to a plateau (loss ~2e-3) they do not leave within the budget.
SEEDED = NeuronTicketSpec(
    teacher=TeacherSpec(d=2, width=3, seed=1),
    student=StudentSpec(widths=(5,), seeds=12),
    train=TrainSpec(steps=2000, refine_steps=60, certify_rounds=1),
)
GRID = [
    Perturbation("none", 0.0),
    Perturbation("scale", 0.0),
    Perturbation("scale", 1.0),
    Perturbation("noise", 0.0),
    Perturbation("scale", 4.0),
    Perturbation("noise", 4.0),
    Perturbation("scale", 8.0),
]


@pytest.fixture(scope="module")
def seeded_records() -> list[dict]:
    return neuron_ticket_records(SEEDED, GRID, 5, 0, 12, CPU)


def by_label(records: list[dict], label: str) -> list[dict]:
    return [r for r in records if r["label"] == label]


# --- masks and overlap ------------------------------------------------------------------------


def test_unit_keep_mask_picks_the_units_weights() -> None:
    arch = Architecture(3, (4,), 1, "erf", bias=False)  # W (4, 3) at 0..11, a (1, 4) at 12..15
    mask = unit_keep_mask(arch, [0, 2])
    assert mask.dtype == torch.bool and mask.shape == (arch.n_params,)
    assert int(mask.sum()) == 2 * (3 + 1)  # r* (d + 1) without biases, one output
    assert mask.nonzero().squeeze(1).tolist() == [0, 1, 2, 6, 7, 8, 12, 14]
    # the kept entries are exactly the sub-network select_units cuts out
    theta = torch.arange(arch.n_params, dtype=torch.float64)
    _, sub = select_units(arch, theta, [0, 2])
    assert sorted(sub.tolist()) == theta[mask].tolist()


def test_unit_keep_mask_with_biases() -> None:
    arch = Architecture(2, (3,), 1, "erf", bias=True, output_bias=True)  # W, b, a, c
    mask = unit_keep_mask(arch, [1])
    # W row 1 at 2..3, b_1 at 7, a_1 at 10; the output bias (index 12) belongs to no unit
    assert mask.nonzero().squeeze(1).tolist() == [2, 3, 7, 10]
    with pytest.raises(ValueError, match="out of range"):
        unit_keep_mask(arch, [3])


def test_scale_one_and_noise_zero_leave_theta0_unchanged() -> None:
    arch, theta0 = student_start(SEEDED, 5, 0, 4, CPU)
    fresh = arch.init(4, 123, dtype=theta0.dtype)
    keep = unit_keep_mask(arch, [0, 1, 3])
    for p in (Perturbation("none", 0.0), Perturbation("scale", 1.0), Perturbation("noise", 0.0)):
        assert torch.equal(perturb_outside(theta0, keep, fresh, p), theta0)
    redrawn = perturb_outside(theta0, keep, fresh, Perturbation("redraw"))
    assert torch.equal(redrawn[:, keep], theta0[:, keep])
    assert torch.equal(redrawn[:, ~keep], fresh[:, ~keep])


def test_ticket_overlap_counts_the_largest_contributions() -> None:
    arch = Architecture(2, (4,), 1, "erf", bias=False)
    w = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [0.6, 0.8]])  # norms 5, 1, 2, 1
    a = torch.tensor([[0.1, -3.0, 1.0, 0.0]])  # contributions 0.5, 3, 2, 0
    theta = torch.cat([w.reshape(-1), a.reshape(-1)])
    assert unit_contributions(arch, theta).tolist() == pytest.approx([0.5, 3.0, 2.0, 0.0])
    assert ticket_overlap(arch, theta, [1, 2]) == 1.0
    assert ticket_overlap(arch, theta, [0, 1]) == 0.5
    assert ticket_overlap(arch, theta, [0, 3]) == 0.0
    assert math.isnan(ticket_overlap(arch, theta * float("nan"), [0, 1]))


# --- the spec ----------------------------------------------------------------------------------


def test_spec_defaults_and_validation() -> None:
    spec = NeuronTicketSpec()
    assert spec.teacher.width == 5 and spec.student.widths == (6,) and spec.student.seeds == 24
    assert (spec.max_subsets, spec.subset_seed, spec.fresh_seed) == (70, 0, 1)
    with pytest.raises(SpecError, match=r"exceed teacher\.width") as err:
        NeuronTicketSpec(student=StudentSpec(widths=(5, 6)))
    assert err.value.field == "student.widths"


def test_records_need_the_reference_run() -> None:
    with pytest.raises(ValueError, match="none"):
        neuron_ticket_records(SEEDED, [Perturbation("scale", 2.0)], 5, 0, 1, CPU)


def test_members_without_a_ticket_are_counted() -> None:
    # no training at all: no subset reaches the global minimum, so no member has a ticket
    spec = NeuronTicketSpec(
        teacher=TeacherSpec(width=3),
        student=StudentSpec(widths=(4,), seeds=3),
        train=TrainSpec(steps=0, refine_steps=0),
    )
    records = neuron_ticket_records(spec, GRID, 4, 0, 3, CPU)
    assert [r["member"] for r in records] == [0, 1, 2]
    for r in records:
        assert r["perturbation"] == r["label"] == NO_TICKET
        assert r["n_winning"] == 0 and r["n_subsets"] == 4
        assert r["ticket"] is None and r["success"] is None and r["kind"] is None
    assert neuron_ticket_summary(records) == []


# --- the seeded teacher-student run ------------------------------------------------------------


def test_record_layout(seeded_records) -> None:
    assert len(seeded_records) == 12 * len(GRID)  # every member has a winning ticket
    for i in range(12):
        mine = seeded_records[i * len(GRID) : (i + 1) * len(GRID)]
        assert [r["label"] for r in mine] == [p.label for p in GRID]
        assert {r["member"] for r in mine} == {i}
        (ticket,) = {tuple(r["ticket"]) for r in mine}
        assert len(ticket) == 3 and list(ticket) == sorted(ticket)
        assert all(r["n_winning"] >= 1 and r["ticket_kind"] == "neuron" for r in mine)
        assert {r["reference_success"] for r in mine} == {mine[0]["success"]}


def test_unperturbed_runs_reproduce_plain_training(seeded_records) -> None:
    arch, theta0 = student_start(SEEDED, 5, 0, 12, CPU)
    objective = objective_for(SEEDED, arch, CPU)
    _, plain = train_and_classify(objective, theta0, SEEDED.train)
    # scale 1 and noise 0 start from theta0 too; the ensemble's size changes only round-off
    for label in ("none", "scale 1", "noise 0"):
        for r, ep in zip(by_label(seeded_records, label), plain, strict=True):
            assert r["kind"] == ep.kind
            assert r["loss"] == pytest.approx(ep.loss, rel=1e-6, abs=1e-13)


def test_removing_the_rest_leaves_the_ticket_alone(seeded_records) -> None:
    # zero incoming and outgoing weights of an erf unit get zero gradient: the removed units stay
    # off, the trained network is its ticket, and the ticket is a winning one
    for r in by_label(seeded_records, "scale 0"):
        assert r["success"] and r["ticket_alone_global"]
        assert r["ticket_overlap"] == 1.0
        assert r["ticket_alone_loss"] == pytest.approx(r["loss"], rel=1e-9, abs=1e-15)


def test_large_perturbations_make_winning_tickets_fail(seeded_records) -> None:
    reference = by_label(seeded_records, "none")
    assert sum(r["success"] for r in reference) >= 11
    broken = [
        r
        for label in ("scale 4", "noise 4", "scale 8")
        for r in by_label(seeded_records, label)
        if r["reference_success"] and not r["success"]
    ]
    for r in broken:  # the solution no longer rests on the ticket alone
        assert not r["ticket_alone_global"] and r["ticket_overlap"] < 1.0
    # scaling the rest by 8 strands several winning tickets on a plateau far above the global
    # minimum (loss ~2e-3; milder perturbations may just slow convergence down)
    stranded = [r for r in broken if r["label"] == "scale 8" and r["loss"] > 1e-4]
    assert len(stranded) >= 2
    rows = {row["label"]: row for row in neuron_ticket_summary(seeded_records)}
    assert list(rows) == [p.label for p in GRID]
    assert rows["none"]["broken"] == 0 and rows["scale 0"]["failures"] == 0
    assert rows["scale 0"]["mean_overlap"] == 1.0 and rows["scale 0"]["ticket_alone_global"] == 1.0
    assert rows["scale 8"]["broken"] == sum(r["label"] == "scale 8" for r in broken)
    assert rows["scale 8"]["failure_rate"] > rows["none"]["failure_rate"]


# --- the summary -------------------------------------------------------------------------------


def synthetic(
    member: int, label: str, success: bool, reference: bool, overlap: float, alone: bool
) -> dict:
    kind, _, size = label.partition(" ")
    return {
        "width": 6,
        "member": member,
        "perturbation": kind,
        "size": float(size or 0),
        "label": label,
        "success": success,
        "kind": "global_min" if success else "local_min",
        "reference_success": reference,
        "ticket_overlap": overlap,
        "ticket_alone_global": alone,
    }


def test_summary_counts_and_wilson_intervals() -> None:
    records = [
        synthetic(0, "none", True, True, 1.0, False),
        synthetic(0, "scale 4", False, True, 0.4, True),
        synthetic(1, "none", True, True, 0.8, False),
        synthetic(1, "scale 4", True, True, 1.0, False),
        synthetic(2, "none", False, False, 0.6, False),
        synthetic(2, "scale 4", False, False, float("nan"), False),
        {"width": 6, "member": 3, "perturbation": NO_TICKET, "label": NO_TICKET},
    ]
    none, scale = neuron_ticket_summary(records)
    assert none["label"] == "none" and scale["label"] == "scale 4" and scale["size"] == 4.0
    for row in (none, scale):
        assert (row["n_members"], row["n_no_ticket"], row["n"]) == (4, 1, 3)
        assert row["n_reference_success"] == 2
    # none: 1 failure of 3, 0 broken of 2; scale 4: 2 of 3, 1 broken of 2 (Wilson, z = 1.96)
    assert none["failures"] == 1 and none["failure_rate"] == pytest.approx(1 / 3)
    assert (none["ci_low"], none["ci_high"]) == pytest.approx((0.0614919, 0.7923404), abs=1e-6)
    assert none["broken"] == 0 and none["broken_rate"] == 0.0
    assert (none["broken_ci_low"], none["broken_ci_high"]) == pytest.approx(
        (0.0, 0.6576198), abs=1e-6
    )
    assert scale["failures"] == 2 and scale["failure_kinds"] == {"local_min": 2}
    assert (scale["ci_low"], scale["ci_high"]) == pytest.approx((0.2076596, 0.9385081), abs=1e-6)
    assert scale["broken"] == 1 and scale["broken_rate"] == 0.5
    assert (scale["broken_ci_low"], scale["broken_ci_high"]) == pytest.approx(
        (0.0945312, 0.9054688), abs=1e-6
    )
    assert none["mean_overlap"] == pytest.approx(0.8)
    assert scale["mean_overlap"] == pytest.approx(0.7)  # the NaN (a diverged run) is left out
    assert none["ticket_alone_global"] == 0.0 and scale["ticket_alone_global"] == pytest.approx(
        1 / 3
    )
