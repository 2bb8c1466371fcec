"""E3, neuron level: do winning neuron-level tickets keep winning when the rest is perturbed?

For every width-m student (m > r*) the width-r* subsets of its hidden units are trained alone as
in E2 (:func:`~escapelab.experiments.kits.teacher_student.train_subsets`). A member with at
least one winning subset gets
a ticket: the first winning subset in lexicographic order. Its keep mask covers all incoming
weights (and biases) and outgoing weights of the ticket's units; everything else is perturbed at
initialization (:func:`escapelab.tickets.perturb.perturb_outside`: re-drawn, scaled by alpha or
given noise of size sigma, all relative to an independent fresh draw from the student's own
initializer). Every (member, perturbation) network is trained in full, and for each we record

* whether it still reaches the global minimum (a *failure* of a winning ticket otherwise; a
  failure whose unperturbed reference run succeeded is *broken* by the perturbation);
* whether the solution still uses the ticket: the ticket's units cut out of the trained network
  alone (``ticket_alone_loss`` / ``ticket_alone_global``) and the share of ticket units among
  the r* units of largest contribution |a_j| * ||w_j|| (``ticket_overlap``).

Members without a winning subset have no ticket to perturb. They still count: each gets one
record with ``perturbation = "no_ticket"`` and None for every per-network field, so the summary
can report how many members had a ticket at all.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from escapelab.config import constraint
from escapelab.experiments.kits.teacher_student import (
    StudentSpec,
    TeacherSpec,
    TeacherStudentSpec,
    check_wider_than_teacher,
    objective_for,
    student_arch,
    student_start,
    train_and_classify,
    train_subsets,
)
from escapelab.nets.mlp import Architecture
from escapelab.nets.surgery import select_units
from escapelab.seeding import derive_seed
from escapelab.theory.multistart import wilson_interval
from escapelab.tickets.perturb import Perturbation, perturb_outside

NO_TICKET = "no_ticket"


@dataclass(frozen=True)
class NeuronTicketSpec(TeacherStudentSpec):
    """Students of the widths in ``student.widths``, their winning width-r* subsets (all subsets,
    or ``max_subsets`` sampled ones) and the fresh draw (``fresh_seed``) the perturbations use."""

    # the E2 default: a five-unit teacher, where students fail despite a winning sub-network
    teacher: TeacherSpec = field(default_factory=lambda: TeacherSpec(width=5))
    student: StudentSpec = field(default_factory=lambda: StudentSpec(widths=(6,), seeds=24))
    max_subsets: int = field(default=70, metadata=constraint(ge=1))
    subset_seed: int = 0
    fresh_seed: int = field(default=1, metadata=constraint(help="seed of the fresh init draw"))
    # one teacher by default: every (member, perturbation) is a full training run, so E3 over
    # eight teachers takes eight times as long; raise it for a claim about teachers in general
    teachers: int = field(
        default=1,
        metadata=constraint(ge=1, help="teacher seeds teacher.seed, teacher.seed + 1, ..."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_wider_than_teacher(self)


def unit_keep_mask(arch: Architecture, units: Sequence[int]) -> Tensor:
    """Flat (P,) mask over theta: True on the incoming weights, biases and outgoing weights of
    ``units``, False elsewhere (other units and the output bias). One hidden layer only."""
    if len(arch.widths) != 1:
        raise ValueError("unit masks are implemented for one hidden layer")
    width = arch.widths[0]
    bad = [u for u in units if not 0 <= u < width]
    if bad:
        raise ValueError(f"units {bad} out of range for width {width}")
    mask = torch.zeros(arch.n_params, dtype=torch.bool)
    first, last = arch.unflatten(mask)  # views: writes go through to mask
    idx = torch.as_tensor(list(units), dtype=torch.long)
    first.weight[idx, :] = True
    if first.bias is not None:
        first.bias[idx] = True
    last.weight[:, idx] = True
    return mask


def unit_contributions(arch: Architecture, theta: Tensor) -> Tensor:
    """c_j = ||a_j|| * ||w_j|| for theta (..., P) -> (..., width): outgoing times incoming norm
    (the incoming vector includes the unit's bias, if any). A unit with c_j = 0 is switched off."""
    first, last = arch.unflatten(theta)
    incoming = first.weight
    if first.bias is not None:
        incoming = torch.cat([incoming, first.bias.unsqueeze(-1)], -1)
    return last.weight.norm(dim=-2) * incoming.norm(dim=-1)


def ticket_overlap(arch: Architecture, theta: Tensor, units: Sequence[int]) -> float:
    """Fraction of the len(units) largest-contribution units of theta (P,) that are in ``units``.
    Ties are broken towards the lower unit index (stable sort); NaN for a non-finite theta."""
    if not torch.isfinite(theta).all():
        return float("nan")
    c = unit_contributions(arch, theta)
    top = torch.sort(c, descending=True, stable=True).indices[: len(units)]
    return len(set(top.tolist()) & set(units)) / len(units)


def _check_grid(perturbations: Sequence[Perturbation]) -> None:
    labels = [p.label for p in perturbations]
    if "none" not in labels:
        raise ValueError("the perturbations must include Perturbation('none'): the reference run")
    if len(set(labels)) != len(labels):
        raise ValueError(f"perturbation labels must be distinct, got {labels}")


def neuron_ticket_records(
    spec: NeuronTicketSpec,
    perturbations: list[Perturbation],
    m: int,
    lo: int,
    hi: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Records of members lo..hi-1 of the width-m students: one per (member with a winning
    ticket, perturbation), member-major in the order of ``perturbations``, and one
    ``no_ticket`` record per member without a winning subset (in member order)."""
    _check_grid(perturbations)
    r = spec.teacher.width
    arch, theta0 = student_start(spec, m, lo, hi, device)
    subs = train_subsets(spec, arch, theta0, spec.max_subsets, spec.subset_seed, device)
    winners = {e: subs.winning(e) for e in range(hi - lo)}
    holders = [e for e in range(hi - lo) if winners[e]]
    tickets = {e: subs.subsets[winners[e][0]] for e in holders}

    results: dict[tuple[int, str], dict[str, Any]] = {}
    if holders:
        fresh = arch.init(
            hi - lo,
            derive_seed("fresh", spec.fresh_seed, m),
            spec.student.init,
            spec.student.init_scale,
            first_member=lo,
            dtype=spec.train.dtype,
            device=device,
        )
        rows = torch.tensor(holders, dtype=torch.long, device=device)
        keep = torch.stack([unit_keep_mask(arch, tickets[e]) for e in holders]).to(device)
        base, draw = theta0[rows], fresh[rows]
        # (H, K, P) -> member-major (H * K, P): member h's perturbations are rows h*K .. h*K+K-1
        start = torch.stack([perturb_outside(base, keep, draw, p) for p in perturbations], 1)
        start = start.reshape(-1, arch.n_params)
        trained, endpoints = train_and_classify(
            objective_for(spec, arch, device), start, spec.train
        )
        sub_obj = objective_for(spec, student_arch(spec.teacher, r, spec.student.bias), device)
        k = len(perturbations)
        for h, e in enumerate(holders):
            units = list(tickets[e])
            theta = trained.theta[h * k : (h + 1) * k]
            _, alone = select_units(arch, theta, units)
            alone_loss = sub_obj.to(alone.dtype).loss(alone).tolist()
            for j, p in enumerate(perturbations):
                ep = endpoints[h * k + j]
                loss = float(alone_loss[j])
                results[e, p.label] = {
                    "kind": ep.kind,
                    "success": ep.kind == "global_min",
                    "loss": ep.loss,
                    "grad_norm": ep.grad_norm,
                    "ticket_alone_loss": loss,
                    "ticket_alone_global": bool(loss <= spec.train.tol_global),
                    "ticket_overlap": ticket_overlap(arch, theta[j], units),
                }

    records = []
    for e in range(hi - lo):
        common = {
            "ticket_kind": "neuron",
            "teacher": spec.teacher.seed,
            "width": m,
            "member": lo + e,
            "n_winning": len(winners[e]),
            "n_subsets": len(subs.subsets),
            "subsets_sampled": subs.sampled,
        }
        if e not in tickets:
            records.append(
                {
                    **common,
                    "ticket": None,
                    "perturbation": NO_TICKET,
                    "size": None,
                    "label": NO_TICKET,
                    **dict.fromkeys(
                        (
                            "kind",
                            "success",
                            "loss",
                            "grad_norm",
                            "reference_success",
                            "ticket_alone_loss",
                            "ticket_alone_global",
                            "ticket_overlap",
                        )
                    ),
                }
            )
            continue
        reference = results[e, "none"]["success"]
        for p in perturbations:
            records.append(
                {
                    **common,
                    "ticket": list(tickets[e]),
                    "perturbation": p.kind,
                    "size": p.size,
                    "label": p.label,
                    **results[e, p.label],
                    "reference_success": reference,
                }
            )
    return records


def _rate(k: int, n: int) -> tuple[float, float, float]:
    lo, hi = wilson_interval(k, n)
    return (k / n if n else float("nan")), lo, hi


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def neuron_ticket_summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per width and perturbation (in the order the records list them, i.e. grid order): how
    often winning tickets fail, with Wilson intervals; the same among tickets whose reference
    run succeeded (``broken``: the perturbation turned a success into a failure); the mean
    ``ticket_overlap`` (over finite values), the share of ``ticket_alone_global`` and the
    endpoint kinds of the failures (a local minimum, or a run that ran out of budget).
    ``n_members`` and ``n_no_ticket`` count every member of the width, with a ticket or not."""
    rows = []
    for m in sorted({int(r["width"]) for r in records}):
        mine = [r for r in records if r["width"] == m]
        n_members = len({r["member"] for r in mine})
        n_no_ticket = sum(r["perturbation"] == NO_TICKET for r in mine)
        labels = list(dict.fromkeys(r["label"] for r in mine if r["perturbation"] != NO_TICKET))
        for label in labels:
            runs = [r for r in mine if r["label"] == label]
            n = len(runs)
            failed = [r["kind"] for r in runs if not r["success"]]
            failures = len(failed)
            reference = [r for r in runs if r["reference_success"]]
            broken = sum(not r["success"] for r in reference)
            rate, ci_low, ci_high = _rate(failures, n)
            b_rate, b_low, b_high = _rate(broken, len(reference))
            rows.append(
                {
                    "width": m,
                    "perturbation": runs[0]["perturbation"],
                    "size": runs[0]["size"],
                    "label": label,
                    "n_members": n_members,
                    "n_no_ticket": n_no_ticket,
                    "n": n,
                    "failures": failures,
                    "failure_rate": rate,
                    "failure_kinds": dict(sorted(Counter(failed).items())),
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                    "n_reference_success": len(reference),
                    "broken": broken,
                    "broken_rate": b_rate,
                    "broken_ci_low": b_low,
                    "broken_ci_high": b_high,
                    "mean_overlap": _mean([r["ticket_overlap"] for r in runs]),
                    "ticket_alone_global": sum(bool(r["ticket_alone_global"]) for r in runs) / n,
                }
            )
    return rows
