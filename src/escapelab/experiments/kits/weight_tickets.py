"""The weight-level half of E3: do IMP's winning tickets keep winning inside a perturbed network?

Per seed, IMP (:mod:`escapelab.tickets.imp`, no controls) runs ``imp.levels`` levels; the ticket
is the last level's mask with the rewind weights, and it is *winning* when, trained alone, its
test accuracy (``success_metric``: at the end of training, or at early stopping) is within
``margin`` of the dense network's. Then the full dense
network is rebuilt from the rewind weights, the ticket's weights (and all biases, which IMP never
prunes) are kept, everything else is perturbed (:mod:`escapelab.tickets.perturb`), and the whole
network is trained again, every (seed, perturbation) as one stacked ensemble with one batch order
per seed.

Per trained network:

* ``success``: test accuracy within ``margin`` of the same seed's unperturbed run (perturbation
  ``none``). The unperturbed network is also trained once more with another batch order
  (perturbation ``reshuffle``): how often that "fails" is the criterion's noise floor, the rate a
  perturbation that changed nothing but the trajectory's details would show;
* ``ticket_alone_acc``: the ticket cut out of the trained weights (the final weights under the
  ticket mask), evaluated without retraining;
* ``ticket_overlap``: the fraction of the k largest-magnitude trained weights that lie in the
  ticket (k = the ticket's size; a mask unrelated to the weights scores the density on average).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from escapelab.config import SpecError, constraint
from escapelab.experiments.base import Task, seed_tasks
from escapelab.experiments.kits.classifier import (
    ClassifierSpec,
    DataSpec,
    load_task_data,
    stacked_classifier,
)
from escapelab.optim.minibatch import FitConfig, evaluate, fit
from escapelab.seeding import derive_seed
from escapelab.theory.multistart import wilson_interval
from escapelab.tickets.imp import IMPConfig, check_rewind_step, run_imp
from escapelab.tickets.masks import MaskSet
from escapelab.tickets.perturb import Perturbation, perturb_outside

RESHUFFLE = "reshuffle"
METRICS = {"final": "test_acc", "early_stopping": "test_acc_es"}


@dataclass(frozen=True)
class WeightTicketSpec:
    """IMP tickets at ``imp.levels`` levels for ``seeds`` networks per dataset, then perturbed."""

    data: DataSpec = field(default_factory=lambda: DataSpec(datasets=("mnist1d",)))
    net: ClassifierSpec = field(default_factory=ClassifierSpec)
    fit: FitConfig = field(default_factory=FitConfig)
    imp: IMPConfig = field(default_factory=lambda: IMPConfig(levels=7, controls=()))
    seeds: int = field(default=12, metadata=constraint(ge=1))
    seed: int = 0
    fresh_seed: int = 1
    margin: float = field(
        default=0.05, metadata=constraint(ge=0, le=1, help="accuracy margin of success")
    )
    # Frankle & Carbin's convention: test accuracy at the early-stopping step
    success_metric: Literal["early_stopping", "final"] = "early_stopping"
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: all seeds")
    )

    def __post_init__(self) -> None:
        if "teacher" in self.data.datasets:
            raise SpecError(
                "weight.data.datasets",
                "allowed: mnist1d, digits (success is judged by accuracy; teacher-student "
                "tickets are tested at the neuron level)",
            )
        if self.imp.rewind not in ("init", "step"):
            raise SpecError(
                "weight.imp.rewind",
                f"must be init or step (a ticket is a set of initial weights), got "
                f"{self.imp.rewind!r}",
            )
        if self.imp.levels < 1:
            raise SpecError("weight.imp.levels", "must be >= 1: the ticket is a pruned network")
        check_rewind_step(self.imp, self.fit, prefix="weight.")


def weight_ticket_tasks(spec: WeightTicketSpec) -> list[Task]:
    """One task per dataset and block of seeds."""
    groups = [
        (f"weight/data={name}", {"ticket_kind": "weight", "dataset": name})
        for name in spec.data.datasets
    ]
    return seed_tasks(groups, spec.seeds, spec.seeds_per_task)


def top_k_overlap(weights: dict[str, Tensor], masks: MaskSet) -> Tensor:
    """Per member, the share of the k largest |weights| (over the masked tensors, k = the
    member's mask size) that the mask keeps."""
    members = next(iter(masks.values())).shape[0]
    mags = torch.cat([weights[n].abs().reshape(members, -1) for n in masks], 1)
    keep = torch.cat([m.reshape(members, -1) for m in masks.values()], 1)
    k = keep.sum(1)
    order = torch.nan_to_num(mags, nan=-1.0).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1]).expand_as(order)
    )
    top = ranks < k[:, None]
    return ((top & keep).sum(1) / k.clamp(min=1)).float()


def weight_ticket_records(
    spec: WeightTicketSpec,
    perturbations: list[Perturbation],
    task: Task,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Records of one task: every (seed, perturbation) of one dataset's block of seeds."""
    name, lo, hi = task.params["dataset"], task.params["lo"], task.params["hi"]
    data = load_task_data(spec.data, name, device)
    model = stacked_classifier(spec.net, data, device)
    seeds = [derive_seed("weight-ticket", spec.seed, name, i) for i in range(lo, hi)]
    imp = run_imp(model, data, spec.fit, spec.imp, seeds, task.checkpoint_dir)
    masks, rewind = imp.masks, imp.rewind
    metric = METRICS[spec.success_metric]
    acc = {(r["prune_level"], r["seed"]): r[metric] for r in imp.records}
    fresh = model.init([derive_seed("fresh", spec.fresh_seed, s) for s in seeds])
    keep = {
        n: masks[n] if n in masks else torch.ones_like(p, dtype=torch.bool)
        for n, p in rewind.items()
    }
    # every perturbation, then the unperturbed network once more with another batch order: the
    # noise floor of the success criterion
    runs = [(q, q.kind, q.label, "perturbed") for q in perturbations]
    runs.append((Perturbation("none", 0.0), RESHUFFLE, "none, reshuffled", "reshuffled"))
    k = len(runs)
    start = {
        n: torch.stack([perturb_outside(p, keep[n], fresh[n], q) for q, *_ in runs], 1).flatten(
            0, 1
        )
        for n, p in rewind.items()
    }
    start_step = spec.imp.rewind_step if spec.imp.rewind == "step" else 0
    order = [derive_seed(tag, s) for s in seeds for *_, tag in runs]
    result = fit(model, start, data, spec.fit, order, start_step=start_step)
    masks_rep = MaskSet({n: m.repeat_interleave(k, 0) for n, m in masks.items()})
    ticket_only = {
        n: p.masked_fill(~masks_rep[n], 0) if n in masks_rep else p
        for n, p in result.params.items()
    }
    _, alone_acc = evaluate(model, ticket_only, data.x_test, data.y_test)
    overlap = top_k_overlap(result.params, masks_rep)
    records = []
    for i, seed in enumerate(seeds):
        dense_acc, ticket_acc = acc[(0, seed)], acc[(spec.imp.levels, seed)]
        reference = result.member_metrics(i * k)[metric]
        density = MaskSet({n: m[i : i + 1] for n, m in masks.items()}).density()
        for j, (q, kind, label, _) in enumerate(runs):
            row = i * k + j
            metrics = result.member_metrics(row)
            records.append(
                {
                    "ticket_kind": "weight",
                    "dataset": name,
                    "member": lo + i,
                    "seed": seed,
                    "density": density,
                    "dense_acc": dense_acc,
                    "ticket_acc": ticket_acc,
                    "winning": ticket_acc >= dense_acc - spec.margin,
                    "perturbation": kind,
                    "size": q.size,
                    "label": label,
                    **metrics,
                    "reference_acc": reference,
                    "success": (not metrics["diverged"])
                    and metrics[metric] >= reference - spec.margin,
                    "ticket_alone_acc": float(alone_acc[row]),
                    "ticket_overlap": float(overlap[row]),
                    "chance_overlap": density,  # expected overlap of an unrelated mask
                }
            )
    return records


def weight_ticket_summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset and perturbation (grid order): how often winning tickets fail, with Wilson
    intervals, the same over all tickets, and the ticket-use measures."""
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        mine = [r for r in records if r["dataset"] == dataset]
        for label in dict.fromkeys(r["label"] for r in mine):
            runs = [r for r in mine if r["label"] == label]
            winning = [r for r in runs if r["winning"]]
            failures = sum(not r["success"] for r in winning)
            n = len(winning)
            ci_low, ci_high = wilson_interval(failures, n)
            rows.append(
                {
                    "dataset": dataset,
                    "perturbation": runs[0]["perturbation"],
                    "size": runs[0]["size"],
                    "label": label,
                    "n_tickets": len(runs),
                    "n": n,
                    "failures": failures,
                    "failure_rate": failures / n if n else float("nan"),
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                    "failures_all_tickets": sum(not r["success"] for r in runs),
                    "test_acc_es": statistics.fmean(r["test_acc_es"] for r in runs),
                    "ticket_alone_acc": statistics.fmean(r["ticket_alone_acc"] for r in runs),
                    "mean_overlap": statistics.fmean(r["ticket_overlap"] for r in runs),
                    "chance_overlap": statistics.fmean(r["chance_overlap"] for r in runs),
                }
            )
    return rows
