"""Trained networks of a stored lottery run, read back from its IMP checkpoints, and the linear
path between the dense solution and a ticket.

The lottery experiment (:mod:`escapelab.experiments.lottery`) checkpoints every finished IMP
level of a task in the directory the runner gave it (:mod:`escapelab.tickets.imp`). This module
only reads them: the tensors through :func:`~escapelab.tickets.masks.read_tensors` (safetensors,
or ``torch.load(weights_only=True)`` for zip files, so loading a user's file never executes
code), and never writes. Before anything is used the directory's ``imp.json`` must equal the
fingerprint the run's spec gives, so the weights of another run are refused.

The path is theta(t) = (1 - t) theta_dense + t theta_ticket, evaluated on the test set with the
loss and accuracy the training reported (:func:`escapelab.optim.minibatch.evaluate`), so its
endpoints reproduce the stored test numbers. Frankle et al. (2020, "Linear mode connectivity and
the lottery ticket hypothesis") interpolate between two trainings of one ticket; here the two
ends are the dense network and its own sparse ticket, which shows whether pruning and rewinding
land in the dense solution's basin (a barrier near 0) or in another one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from escapelab.experiments.kits.classifier import load_task_data, stacked_classifier
from escapelab.experiments.lottery import LotterySpec, network_seeds
from escapelab.landscape.geometry import Interpolation, interpolate
from escapelab.nets.stacked import StackedModel
from escapelab.optim.minibatch import evaluate
from escapelab.tickets.imp import finished_levels, imp_fingerprint, read_level

DEFAULT_T = (-0.25, 1.25, 61)
"""The interpolation grid: 61 points from t = -0.25 to 1.25 (steps of 0.025, so 0 and 1 on it)."""
MATCH_TOLERANCE = 0.01
"""A ticket "matches" the dense network when its test accuracy is at most this much lower."""


@dataclass(frozen=True)
class TicketPair:
    """The dense trained network (level 0) and the trained ticket at ``level`` of one member,
    each as a flat parameter vector in the model's parameter order, with their stored records
    and what is needed to evaluate them (model and test set)."""

    dense: Tensor
    ticket: Tensor
    level: int
    dense_record: dict[str, Any]
    ticket_record: dict[str, Any]
    model: StackedModel
    x_test: Tensor
    y_test: Tensor
    regression: bool


def choose_level(records: list[dict[str, Any]], member_seed: int) -> int:
    """The sparsest pruned level whose ticket's final test accuracy is within
    :data:`MATCH_TOLERANCE` (1 percentage point) of the dense network's, else the last level
    (also for regression data, which has no accuracy). ``records``: the checkpointed ones."""
    mine = {
        r["prune_level"]: r for r in records if r["role"] == "ticket" and r["seed"] == member_seed
    }
    levels = sorted(level for level in mine if level > 0)
    if not levels:
        raise LookupError("the run has no finished pruning level (only the dense networks)")
    dense = mine[0]["test_acc"]
    matching = [lv for lv in levels if mine[lv]["test_acc"] >= dense - MATCH_TOLERANCE]
    return matching[-1] if matching else levels[-1]


def load_ticket_pair(
    spec: LotterySpec,
    dataset: str,
    member: int,
    checkpoint_dir: str | Path,
    level: int | None = None,
    device: torch.device | str = "cpu",
) -> TicketPair:
    """Network ``member`` of ``dataset`` from the task checkpoint directory that trained it
    (members lo..hi-1 of the task whose key names that directory). ValueError (one line) when
    the directory holds another run, a level that is not finished, or no such member."""
    root = Path(checkpoint_dir)
    if dataset not in spec.data.datasets:
        raise ValueError(f"--dataset: {dataset!r} is not in this run; it has {spec.data.datasets}")
    meta = root / "imp.json"
    if not meta.is_file():
        raise ValueError(f"{root}: no IMP checkpoints there (no imp.json)")
    stored = json.loads(meta.read_text())
    seeds = stored.get("seeds", [])
    wanted = network_seeds(spec, dataset, member, member + 1)[0]
    if wanted not in seeds:
        raise ValueError(
            f"{root}: holds no checkpoint of {dataset} member {member}; it is another task's or "
            "another run's"
        )
    device = torch.device(device)
    data = load_task_data(spec.data, dataset, device)
    model = stacked_classifier(spec.net, data, device)
    expected = imp_fingerprint(model, data, spec.fit, spec.imp, seeds)
    if stored != expected:
        differs = sorted(k for k in expected if stored.get(k) != expected[k])
        raise ValueError(
            f"{root}: holds an IMP run with other settings ({', '.join(differs)}), not this run's"
        )
    finished = finished_levels(root)
    if finished < 2:
        raise ValueError(f"{root}: no pruning level has finished yet ({finished} levels stored)")
    records = [r for lv in range(finished) for r in read_level(root, lv)[1]]
    if level is None:
        level = choose_level(records, wanted)
    elif not 1 <= level < finished:
        raise ValueError(f"--level: must be between 1 and {finished - 1} (finished), got {level}")
    index = seeds.index(wanted)
    flat = [_flat_member(read_level(root, lv)[0], model, index, device) for lv in (0, level)]
    dense_record, ticket_record = (
        next(
            r
            for r in records
            if r["prune_level"] == lv and r["role"] == "ticket" and r["seed"] == wanted
        )
        for lv in (0, level)
    )
    return TicketPair(
        flat[0],
        flat[1],
        level,
        dense_record,
        ticket_record,
        model,
        data.x_test,
        data.y_test,
        data.regression,
    )


def _flat_member(
    tensors: dict[str, Tensor], model: StackedModel, index: int, device: torch.device
) -> Tensor:
    """Member ``index`` of a level's trained (``final/``) weights as one flat vector."""
    parts = []
    for name, shape in model.shapes.items():
        stacked = tensors.get(f"final/{name}")
        if stacked is None or tuple(stacked.shape[1:]) != tuple(shape):
            raise ValueError(f"checkpoint lacks the trained tensor {name!r} of shape {list(shape)}")
        parts.append(stacked[index].reshape(-1))
    return torch.cat(parts).to(device, model.dtype)


class _TestSetLoss:
    """The test loss of stacked flat parameter vectors (E, P), as the flat front-end of
    :func:`~escapelab.landscape.geometry.interpolate` asks; the accuracy of the same points
    comes from the same forward pass (``accuracy`` is called right after ``loss`` on the same
    tensor, so it is kept instead of evaluated twice)."""

    def __init__(self, pair: TicketPair) -> None:
        self.pair = pair
        self._last: tuple[Tensor, Tensor] | None = None

    def _unflatten(self, points: Tensor) -> dict[str, Tensor]:
        out, offset = {}, 0
        for name, shape in self.pair.model.shapes.items():
            n = shape.numel()
            out[name] = points[:, offset : offset + n].reshape(points.shape[0], *shape)
            offset += n
        return out

    def loss(self, points: Tensor) -> Tensor:
        p = self.pair
        loss, acc = evaluate(p.model, self._unflatten(points), p.x_test, p.y_test, p.regression)
        self._last = (points, acc)
        return loss

    def accuracy(self, points: Tensor) -> Tensor:
        if self._last is None or self._last[0] is not points:
            self.loss(points)
        assert self._last is not None
        return self._last[1]


def ticket_interpolation(pair: TicketPair, t: Tensor | None = None) -> Interpolation:
    """Test loss and accuracy along (1 - t) theta_dense + t theta_ticket (default grid
    :data:`DEFAULT_T`) and the loss barrier of the path on [0, 1]."""
    grid = torch.linspace(*DEFAULT_T, dtype=torch.float64) if t is None else t
    objective = _TestSetLoss(pair)
    return interpolate(
        objective,  # type: ignore[arg-type]  # only .loss is used
        pair.dense,
        pair.ticket,
        t=grid,
        metric=None if pair.regression else objective.accuracy,
    )


__all__ = ["TicketPair", "choose_level", "load_ticket_pair", "ticket_interpolation"]
