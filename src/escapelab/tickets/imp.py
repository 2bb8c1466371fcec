"""Iterative magnitude pruning (IMP) with rewinding, learning-rate rewinding and fine-tuning.

Level 0 trains the dense networks. Level l >= 1 prunes ``rate`` of the weights each network still
keeps (the smallest magnitudes of its trained weights at level l-1, over all layers at once or
layer by layer), then retrains from

* ``init``:     the initial weights under the new mask (Frankle & Carbin 2019, "The Lottery
  Ticket Hypothesis");
* ``step``:     the weights after ``rewind_step`` updates, training the remaining steps of the
  schedule (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis");
* ``lr``:       the trained weights of level l-1, with the learning-rate schedule rewound to its
  start (Renda, Frankle & Carbin 2020, "Comparing Rewinding and Fine-tuning");
* ``finetune``: the trained weights, trained on at the schedule's final learning rate.

Controls, at every level >= 1, train beside the tickets: ``reinit``, the ticket's mask with fresh
weights from the initializer trained from step 0, and ``random_mask``, a random mask with the
ticket's per-layer counts started from the same weights as the ticket. The optimizer state starts
fresh at every level.

Every seed's networks train together with the other seeds' as one stacked ensemble, and all
randomness (batch order, re-initialization, random masks) is derived from (seed, level, role), so
an ensemble run, a seed-by-seed run and a resumed run give the same networks. With
``checkpoint_dir`` every finished level is written to disk (masks, trained and rewind weights as
safetensors, records as JSON); a run started again on the same directory continues after the
last finished level.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from escapelab.config import SpecError, constraint
from escapelab.data.datasets import SupervisedData
from escapelab.nets.stacked import StackedModel
from escapelab.optim.minibatch import FitConfig, FitResult, fit
from escapelab.seeding import derive_seed
from escapelab.tickets.masks import MaskSet, read_tensors, write_tensors
from escapelab.tickets.pruning import (
    global_magnitude_prune,
    layerwise_magnitude_prune,
    random_masks_like,
)

CONTROLS: tuple[str, ...] = ("reinit", "random_mask")
ROLES: tuple[str, ...] = ("ticket", *CONTROLS)


@dataclass(frozen=True)
class IMPConfig:
    """How many levels, how much each prunes, and where each level restarts from."""

    levels: int = field(default=14, metadata=constraint(ge=0, help="pruning rounds after dense"))
    rate: float = field(default=0.2, metadata=constraint(gt=0, lt=1, help="per level"))
    scope: Literal["global", "layerwise"] = "global"
    output_rate: float | None = field(
        default=None,
        metadata=constraint(gt=0, lt=1, help="the last layer's own rate; null: the same rate"),
    )
    rewind: Literal["init", "step", "lr", "finetune"] = "init"
    rewind_step: int = field(default=0, metadata=constraint(ge=0, help="for rewind = step"))
    controls: tuple[Literal["reinit", "random_mask"], ...] = field(
        default=CONTROLS, metadata=constraint(empty=True, help="[] for none")
    )
    include_bias: bool = False

    def __post_init__(self) -> None:
        if self.rewind_step and self.rewind != "step":
            raise SpecError(
                "imp.rewind_step", f"is only used with rewind = step (rewind is {self.rewind!r})"
            )
        if len(set(self.controls)) != len(self.controls):
            raise SpecError("imp.controls", f"controls must be distinct, got {self.controls}")

    def density_after(self, level: int) -> float:
        """The fraction of weights left after ``level`` levels (ignoring the output rate and
        rounding): (1 - rate)^level."""
        return (1 - self.rate) ** level


def check_rewind_step(config: IMPConfig, fit_config: FitConfig, prefix: str = "") -> None:
    """SpecError (a ValueError) on ``{prefix}imp.rewind_step`` unless rewinding to step k
    leaves training to do: k < fit.steps. The one place this rule lives; specs that embed both
    configs call it from their ``__post_init__``."""
    if config.rewind == "step" and config.rewind_step >= fit_config.steps:
        raise SpecError(
            f"{prefix}imp.rewind_step",
            f"must be below fit.steps = {fit_config.steps}, got {config.rewind_step}",
        )


def prunable_names(model: StackedModel, include_bias: bool = False) -> list[str]:
    """The parameters IMP prunes: weights (per-member ndim >= 2), and biases if asked."""
    return [
        n
        for n, shape in model.shapes.items()
        if len(shape) >= 2 or (include_bias and n.rsplit(".", 1)[-1] == "bias")
    ]


def prune_level(weights: Mapping[str, Tensor], masks: MaskSet, config: IMPConfig) -> MaskSet:
    """The next level's masks: prune ``config.rate`` of what each member still keeps, the last
    masked tensor at ``config.output_rate`` when given (weights: (E, ...) stacked). Non-finite
    weights (of a diverged network, which stays recorded as such) rank as zeros."""
    names = list(masks)
    selected = {n: torch.nan_to_num(weights[n], nan=0.0, posinf=0.0, neginf=0.0) for n in names}
    if config.scope == "layerwise":
        rates: dict[str, float] = {"*": config.rate}
        if config.output_rate is not None:
            rates[names[-1]] = config.output_rate
        return layerwise_magnitude_prune(selected, rates, masks, batch_dims=1)
    if config.output_rate is None or len(names) == 1:
        return global_magnitude_prune(selected, config.rate, masks, batch_dims=1)
    body = MaskSet({n: masks[n] for n in names[:-1]})
    out = MaskSet({names[-1]: masks[names[-1]]})
    body = global_magnitude_prune(selected, config.rate, body, batch_dims=1)
    out = global_magnitude_prune(selected, config.output_rate, out, batch_dims=1)
    return MaskSet({**body, **out})


def sign_flips(start: Mapping[str, Tensor], final: Mapping[str, Tensor], masks: MaskSet) -> Tensor:
    """Per member, the fraction of kept non-zero starting weights whose sign differs at the end."""
    flipped, counted = 0, 0
    for name, keep in masks.items():
        members = keep.shape[0]
        live = (keep & (start[name] != 0)).reshape(members, -1)
        changed = (torch.sign(start[name]) != torch.sign(final[name])).reshape(members, -1)
        flipped = flipped + (live & changed).sum(1)
        counted = counted + live.sum(1)
    return (flipped / counted.clamp(min=1)).float().cpu()


@dataclass
class _Group:
    """Networks of one role at one level: where they start and how they train."""

    role: str
    start: dict[str, Tensor]
    masks: MaskSet
    seeds: list[int]
    plan: tuple[int, bool]  # (start step, fine-tune at the final learning rate)


def _mask_stack(per_member: list[MaskSet]) -> MaskSet:
    return MaskSet({n: torch.stack([m[n] for m in per_member]) for n in per_member[0]})


def _masked(params: Mapping[str, Tensor], masks: MaskSet) -> dict[str, Tensor]:
    return {n: p.masked_fill(~masks[n], 0) if n in masks else p.clone() for n, p in params.items()}


class _Checkpoints:
    """One file pair per finished level; the JSON (written last, atomically) marks it done."""

    def __init__(self, root: Path, fingerprint: dict[str, Any]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        meta = root / "imp.json"
        if meta.exists():
            stored = json.loads(meta.read_text())
            if stored != fingerprint:
                differs = sorted(k for k in fingerprint if stored.get(k) != fingerprint[k])
                raise ValueError(
                    f"checkpoint directory {root} holds an IMP run with other settings "
                    f"({', '.join(differs)}); use another directory or delete it"
                )
        else:
            _atomic_write(meta, json.dumps(fingerprint, indent=1))

    def _paths(self, level: int) -> tuple[Path, Path]:
        return level_paths(self.root, level)

    def finished(self) -> int:
        """The number of consecutive finished levels from level 0."""
        return finished_levels(self.root)

    def save(self, level: int, tensors: dict[str, Tensor], records: list[dict[str, Any]]) -> None:
        weights, meta = self._paths(level)
        tmp = weights.with_suffix(".tmp")
        write_tensors(tensors, tmp)
        os.replace(tmp, weights)
        _atomic_write(meta, json.dumps(records))

    def load(self, level: int) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
        """A finished level's tensors and records (see :func:`read_level`)."""
        return read_level(self.root, level)


def level_paths(root: Path, level: int) -> tuple[Path, Path]:
    """The tensor file and the records file of ``level`` in a checkpoint directory."""
    return root / f"level_{level:03d}.safetensors", root / f"level_{level:03d}.json"


def finished_levels(root: Path) -> int:
    """The number of consecutive finished levels from level 0 in a checkpoint directory."""
    level = 0
    while all(p.exists() for p in level_paths(root, level)):
        level += 1
    return level


def read_level(root: Path, level: int) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """A finished level's tensors (``final/``, ``mask/`` and at level 0 ``rewind/`` names) and
    records, read without writing anything and without executing code from the files
    (:func:`~escapelab.tickets.masks.read_tensors`). Records written before escapelab 0.2 named
    ``prune_level`` ``level``; they are renamed on the way in."""
    weights, meta = level_paths(root, level)
    records = [
        {("prune_level" if k == "level" else k): v for k, v in r.items()}
        for r in json.loads(meta.read_text())
    ]
    return read_tensors(weights), records


def imp_fingerprint(
    model: StackedModel,
    data: SupervisedData,
    fit_config: FitConfig,
    config: IMPConfig,
    seeds: Sequence[int],
) -> dict[str, Any]:
    """What a checkpoint directory's ``imp.json`` holds: the settings that make its levels
    this run's (IMP and fit configs, seeds, data set, parameter shapes), as plain JSON."""
    fingerprint = {
        "imp": asdict(config),
        "fit": asdict(fit_config),
        "seeds": [int(s) for s in seeds],
        "data": data.name,
        "shapes": {n: list(s) for n, s in model.shapes.items()},
    }
    return json.loads(json.dumps(fingerprint))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _split(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


@dataclass
class IMPRun:
    """An IMP run's records, plus the last level's masks, the rewind weights and the last
    level's trained ticket weights (all stacked (E, ...) in the order of the seeds)."""

    records: list[dict[str, Any]]
    masks: MaskSet
    rewind: dict[str, Tensor]
    final: dict[str, Tensor]


def run_imp(
    model: StackedModel,
    data: SupervisedData,
    fit_config: FitConfig,
    config: IMPConfig,
    seeds: Sequence[int],
    checkpoint_dir: str | Path | None = None,
    on_level: Callable[[int, list[dict[str, Any]]], None] | None = None,
    max_members: int | None = None,
) -> IMPRun:
    """Run IMP for the networks ``model.init(seeds)``. The records: one per (prune_level, role,
    seed)
    with test accuracy at the end and at the early-stopping step, that step, the density
    (fraction of prunable weights kept), per-layer densities and the sign-flip fraction.

    ``on_level(level, records)`` is called after each level (e.g. for progress bars).
    ``max_members`` caps how many networks train at once (memory; 1: one network at a time).
    """
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    check_rewind_step(config, fit_config)
    names = prunable_names(model, config.include_bias)
    checkpoints = None
    if checkpoint_dir is not None:
        fingerprint = imp_fingerprint(model, data, fit_config, config, seeds)
        checkpoints = _Checkpoints(Path(checkpoint_dir), fingerprint)
    records: list[dict[str, Any]] = []
    start_level = checkpoints.finished() if checkpoints else 0
    start_level = min(start_level, config.levels + 1)
    rewind: dict[str, Tensor] = {}
    final: dict[str, Tensor] = {}
    masks = MaskSet({})
    for level in range(start_level):
        tensors, level_records = checkpoints.load(level)  # type: ignore[union-attr]
        records += level_records
        if level == 0:
            rewind = {n: t.to(model.device) for n, t in _split(tensors, "rewind/").items()}
        final = {n: t.to(model.device) for n, t in _split(tensors, "final/").items()}
        masks = MaskSet({n: t.to(model.device) for n, t in _split(tensors, "mask/").items()})
    for level in range(start_level, config.levels + 1):
        if level == 0:
            init = model.init(seeds)
            masks = MaskSet({n: torch.ones_like(init[n], dtype=torch.bool) for n in names})
            groups = [_Group("ticket", init, masks, seeds, (0, False))]
        else:
            masks = prune_level(final, masks, config)
            groups = _level_groups(model, config, seeds, level, masks, rewind, final)
        results = _train_groups(model, data, fit_config, config, groups, level, max_members)
        ticket = results["ticket"]
        if level == 0:
            rewind = ticket.snapshots.get(config.rewind_step, groups[0].start)
        final = ticket.params
        level_records = [record for g in groups for record in _records(level, g, results[g.role])]
        records += level_records
        if checkpoints is not None:
            tensors = {f"final/{n}": t for n, t in final.items()}
            tensors.update({f"mask/{n}": t for n, t in masks.items()})
            if level == 0:
                tensors.update({f"rewind/{n}": t for n, t in rewind.items()})
            checkpoints.save(level, tensors, level_records)
        if on_level is not None:
            on_level(level, level_records)
    return IMPRun(records, masks, rewind, final)


def _level_groups(
    model: StackedModel,
    config: IMPConfig,
    seeds: list[int],
    level: int,
    masks: MaskSet,
    rewind: dict[str, Tensor],
    final: dict[str, Tensor],
) -> list[_Group]:
    """The ticket and its controls at ``level`` >= 1."""
    if config.rewind in ("init", "step"):
        start, plan = rewind, (config.rewind_step, False)
    else:
        start, plan = final, (0, config.rewind == "finetune")
    groups = [_Group("ticket", _masked(start, masks), masks, seeds, plan)]
    if "reinit" in config.controls:
        fresh = model.init([derive_seed("reinit", s, level) for s in seeds])
        groups.append(_Group("reinit", _masked(fresh, masks), masks, seeds, (0, False)))
    if "random_mask" in config.controls:
        per_member = [
            random_masks_like(
                MaskSet({n: m[i] for n, m in masks.items()}),
                generator=derive_seed("random-mask", s, level),
            )
            for i, s in enumerate(seeds)
        ]
        random = _mask_stack(per_member)
        groups.append(_Group("random_mask", _masked(start, random), random, seeds, plan))
    return groups


def _train_groups(
    model: StackedModel,
    data: SupervisedData,
    fit_config: FitConfig,
    config: IMPConfig,
    groups: list[_Group],
    level: int,
    max_members: int | None,
) -> dict[str, FitResult]:
    """Train the groups, all those with the same plan as one ensemble; results by role."""
    results: dict[str, FitResult] = {}
    for plan in dict.fromkeys(g.plan for g in groups):
        mine = [g for g in groups if g.plan == plan]
        start_step, finetune = plan
        result = fit(
            model,
            {n: torch.cat([g.start[n] for g in mine]) for n in mine[0].start},
            data,
            fit_config,
            [derive_seed("order", s, level, g.role) for g in mine for s in g.seeds],
            {n: torch.cat([g.masks[n] for g in mine]) for n in mine[0].masks},
            snapshot_steps=[config.rewind_step] if level == 0 else [],
            start_step=start_step,
            lr=fit_config.final_lr if finetune else None,
            constant_lr=finetune,
            max_members=max_members,
        )
        lo = 0
        for g in mine:
            results[g.role] = result.rows(lo, lo + len(g.seeds))
            lo += len(g.seeds)
    return results


def _records(level: int, group: _Group, result: FitResult) -> list[dict[str, Any]]:
    """One record per network of ``group``."""
    flips = sign_flips(group.start, result.params, group.masks)
    records = []
    for i, seed in enumerate(group.seeds):
        member = MaskSet({n: m[i : i + 1] for n, m in group.masks.items()})
        records.append(
            {
                "prune_level": level,
                "role": group.role,
                "seed": seed,
                "density": member.density(),
                "layer_density": member.densities(),
                "sign_flip": float(flips[i]),
                "start_step": group.plan[0],
                **result.member_metrics(i),
            }
        )
    return records
