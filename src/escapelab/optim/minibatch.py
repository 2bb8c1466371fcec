"""Mini-batch training of a stacked ensemble of classifiers (or regressors: the teacher-student
data), with masks and early-stopping metrics.

Every member is trained as if alone: its own mini-batch order (drawn from a generator seeded by
the member's seed), its own mean loss (cross-entropy; half the squared error for a regression
set), its own Adam or SGD state (both optimizers are
element-wise, so one optimizer over the stacked tensors is exactly one per member). The total
loss is the sum of the member means, whose gradient with respect to member i's parameters is
member i's own gradient. A step runs without an autograd graph for the loss: the gradient of
the mean loss with respect to the outputs is taken in closed form and pulled back through the
model by :meth:`~escapelab.nets.stacked.StackedModel.vjp` (hand-written for the MLP, autograd
for other modules), straight into the flat gradient buffer.

Masks (:mod:`escapelab.tickets.masks`, one boolean tensor (E, ...) per masked parameter) are
enforced by zeroing the masked weights once and the masked gradients before each step, so
pruned weights stay exactly zero and the optimizer's moments there stay zero (only in a network
that has already diverged can a pruned entry then hold nan). All parameters, gradients, masks
and optimizer moments live in flat buffers (:mod:`escapelab.optim.flat`), so masking and the
optimizer update are one operation each per step, whatever the number of parameter tensors.

Validation and test sets are evaluated every ``eval_every`` steps and at the end. The
early-stopping step of a member is the evaluation with the lowest validation loss (Frankle &
Carbin 2019 report the iteration of minimum validation loss and the test accuracy there).
A member whose loss becomes non-finite is recorded as diverged, never raised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from escapelab.config import constraint
from escapelab.data.datasets import SupervisedData
from escapelab.nets.stacked import StackedModel
from escapelab.optim.flat import FlatParameters
from escapelab.optim.hooks import Hook, Snapshots, StepState

_EVAL_CHUNK = 2048


@dataclass(frozen=True)
class FitConfig:
    """How each member is trained (the defaults follow the MNIST-1D paper's MLP runs: Adam,
    learning rate 1e-2, batches of 100)."""

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = field(default=1e-2, metadata=constraint(gt=0))
    momentum: float = field(default=0.9, metadata=constraint(ge=0, help="SGD only"))
    weight_decay: float = field(default=0.0, metadata=constraint(ge=0))
    batch_size: int = field(default=100, metadata=constraint(ge=1))
    steps: int = field(default=3000, metadata=constraint(ge=1))
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_factor: float = field(
        default=0.01, metadata=constraint(ge=0, le=1, help="cosine ends at lr * this")
    )
    eval_every: int = field(default=100, metadata=constraint(ge=1))

    def lr_at(self, step: int, lr: float | None = None) -> float:
        """The learning rate of step ``step`` (0-based) under the schedule."""
        base = self.lr if lr is None else lr
        if self.schedule == "constant":
            return base
        floor = base * self.min_lr_factor
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * step / self.steps))

    @property
    def final_lr(self) -> float:
        """The last learning rate of the schedule (what fine-tuning continues with)."""
        return self.lr_at(self.steps)


@dataclass
class FitResult:
    """Final weights, requested snapshots and the evaluation history (E members, K evals)."""

    params: dict[str, Tensor]
    snapshots: dict[int, dict[str, Tensor]]
    eval_steps: list[int]
    val_loss: Tensor  # (E, K)
    val_acc: Tensor
    test_loss: Tensor
    test_acc: Tensor
    train_loss: Tensor  # (E,) mean loss over the last eval interval's batches
    diverged: Tensor  # (E,) bool
    wall_time: float

    def rows(self, lo: int, hi: int) -> FitResult:
        """The results of members lo..hi-1."""
        return FitResult(
            {n: p[lo:hi] for n, p in self.params.items()},
            {t: {n: p[lo:hi] for n, p in snap.items()} for t, snap in self.snapshots.items()},
            self.eval_steps,
            self.val_loss[lo:hi],
            self.val_acc[lo:hi],
            self.test_loss[lo:hi],
            self.test_acc[lo:hi],
            self.train_loss[lo:hi],
            self.diverged[lo:hi],
            self.wall_time,
        )

    @staticmethod
    def concat(parts: Sequence[FitResult]) -> FitResult:
        """The results of consecutive member blocks as one (wall times add up)."""

        def cat(get: Callable[[FitResult], Tensor]) -> Tensor:
            return torch.cat([get(r) for r in parts])

        first = parts[0]
        return FitResult(
            {n: cat(lambda r, n=n: r.params[n]) for n in first.params},
            {
                t: {n: cat(lambda r, t=t, n=n: r.snapshots[t][n]) for n in snap}
                for t, snap in first.snapshots.items()
            },
            first.eval_steps,
            cat(lambda r: r.val_loss),
            cat(lambda r: r.val_acc),
            cat(lambda r: r.test_loss),
            cat(lambda r: r.test_acc),
            cat(lambda r: r.train_loss),
            cat(lambda r: r.diverged),
            sum(r.wall_time for r in parts),
        )

    @property
    def es_index(self) -> Tensor:
        """Per member, the evaluation with the lowest validation loss (the last one without a
        validation set); non-finite losses never win."""
        if self.val_loss.shape[1] == 0 or not torch.isfinite(self.val_loss).any():
            return torch.full((self.val_loss.shape[0],), len(self.eval_steps) - 1)
        return torch.nan_to_num(self.val_loss, nan=math.inf).argmin(dim=1)

    def member_metrics(self, i: int) -> dict[str, float | int | bool]:
        """The per-member numbers a record keeps."""
        es = int(self.es_index[i])
        return {
            "test_acc": float(self.test_acc[i, -1]),
            "test_loss": float(self.test_loss[i, -1]),
            "test_acc_es": float(self.test_acc[i, es]),
            "test_loss_es": float(self.test_loss[i, es]),
            "es_step": self.eval_steps[es],
            "val_loss_min": float(self.val_loss[i, es]),
            "val_acc_es": float(self.val_acc[i, es]),
            "train_loss": float(self.train_loss[i]),
            "diverged": bool(self.diverged[i]),
        }


def _batch_orders(
    seeds: Sequence[int], n: int, batch: int, steps: int, device: torch.device
) -> Tensor:
    """Indices (steps, E, batch): per member, consecutive shuffled epochs from its own seed,
    dropping each epoch's incomplete last batch."""
    per_epoch = n // batch
    if per_epoch == 0:
        raise ValueError(f"batch_size {batch} exceeds the {n} training samples")
    epochs = math.ceil(steps / per_epoch)
    orders = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        perms = [torch.randperm(n, generator=gen)[: per_epoch * batch] for _ in range(epochs)]
        orders.append(torch.cat(perms).reshape(-1, batch)[:steps])
    return torch.stack(orders, dim=1).to(device)


def _per_sample_loss(outputs: Tensor, y: Tensor, regression: bool) -> Tensor:
    """(E, B) losses of outputs (E, B, k): cross-entropy against labels y (E, B), or half the
    squared error against targets y (E, B, k)."""
    if regression:
        return 0.5 * (outputs - y).square().sum(dim=2)
    return _log_softmax_classes(outputs).gather(1, y.unsqueeze(1)).squeeze(1).neg_()


def _log_softmax_classes(outputs: Tensor) -> Tensor:
    """log softmax over the classes of outputs (E, B, k), returned class-major (E, k, B):
    reducing over a non-innermost dimension is the fast case of torch's CPU kernel (over an
    innermost dimension of 10 classes it is ~10x slower, whatever the memory layout)."""
    return torch.log_softmax(outputs.transpose(1, 2), dim=1)


def _mean_loss_and_grad(outputs: Tensor, y: Tensor, regression: bool) -> tuple[Tensor, Tensor]:
    """Per member the mean loss over the batch (E,) of outputs (E, B, k), as
    :func:`_per_sample_loss` defines it, and its gradient with respect to the outputs in
    closed form: (softmax - one_hot(y)) / B for cross-entropy, (outputs - y) / B for half the
    squared error."""
    batch = outputs.shape[1]
    if regression:
        residual = outputs - y
        return 0.5 * residual.square().sum(dim=2).mean(dim=1), residual.div_(batch)
    log_p = _log_softmax_classes(outputs)  # (E, k, B)
    target = y.unsqueeze(1)
    loss = log_p.gather(1, target).mean(dim=(1, 2)).neg_()
    grad = log_p.exp_()  # the softmax, in place of log_p
    grad.scatter_add_(1, target, torch.full_like(target, -1, dtype=grad.dtype))
    return loss, grad.div_(batch).transpose(1, 2)


@torch.no_grad()
def evaluate(
    model: StackedModel,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    regression: bool = False,
) -> tuple[Tensor, Tensor]:
    """Mean loss and accuracy (E,) of every member on a shared set (x, y): cross-entropy, or
    for ``regression`` half the squared error (accuracy nan)."""
    members = next(iter(params.values())).shape[0]
    if len(y) == 0:
        nan = torch.full((members,), math.nan)
        return nan, nan.clone()
    loss_sum = torch.zeros(members, dtype=torch.float64, device=x.device)
    correct = torch.zeros(members, dtype=torch.float64, device=x.device)
    for lo in range(0, len(y), _EVAL_CHUNK):
        xb, yb = x[lo : lo + _EVAL_CHUNK], y[lo : lo + _EVAL_CHUNK]
        outputs = model.forward(params, xb, shared=True)
        target = yb.expand(members, *yb.shape)
        loss_sum += _per_sample_loss(outputs, target, regression).sum(dim=1, dtype=torch.float64)
        if not regression:
            # argmax is fast over a contiguous class dimension (the MLP's logits are not)
            correct += (outputs.contiguous().argmax(dim=2) == yb).sum(dim=1, dtype=torch.float64)
    accuracy = correct / len(y) if not regression else torch.full_like(correct, math.nan)
    return (loss_sum / len(y)).float().cpu(), accuracy.float().cpu()


def fit(
    model: StackedModel,
    params: Mapping[str, Tensor],
    data: SupervisedData,
    config: FitConfig,
    seeds: Sequence[int],
    masks: Mapping[str, Tensor] | None = None,
    *,
    snapshot_steps: Sequence[int] = (),
    start_step: int = 0,
    lr: float | None = None,
    constant_lr: bool = False,
    max_members: int | None = None,
    hooks: Sequence[Hook] = (),
) -> FitResult:
    """Train copies of ``params`` (E members, batch orders from ``seeds``) under ``masks``.

    ``snapshot_steps``: steps t at which the weights (after t updates) are kept, e.g. the rewind
    point k of IMP. ``start_step``: resume the schedule and the batch order at this step (the
    weights are taken as those of that step, the optimizer state starts fresh) and train to
    ``config.steps``. ``lr`` overrides the config's peak learning rate; ``constant_lr`` holds it
    fixed (fine-tuning). ``max_members``: train at most this many members at once, block after
    block (to bound memory; members are independent, so only the rounding changes).
    ``hooks`` (:mod:`escapelab.optim.hooks`) see the named weights after every step (from
    ``start_step`` to ``config.steps``); with ``max_members`` they run once per block.
    """
    members = model.check(params)
    if len(seeds) != members:
        raise ValueError(f"{len(seeds)} seeds for {members} members")
    if max_members is not None and max_members < 1:
        raise ValueError(f"max_members must be >= 1, got {max_members}")
    if max_members is not None and members > max_members:
        blocks = [(lo, min(lo + max_members, members)) for lo in range(0, members, max_members)]
        return FitResult.concat(
            [
                fit(
                    model,
                    {n: p[lo:hi] for n, p in params.items()},
                    data,
                    config,
                    seeds[lo:hi],
                    None if masks is None else {n: m[lo:hi] for n, m in masks.items()},
                    snapshot_steps=snapshot_steps,
                    start_step=start_step,
                    lr=lr,
                    constant_lr=constant_lr,
                    hooks=hooks,
                )
                for lo, hi in blocks
            ]
        )
    if not 0 <= start_step < config.steps:
        raise ValueError(f"start_step must lie in [0, {config.steps}), got {start_step}")
    bad = [t for t in snapshot_steps if not start_step <= t <= config.steps]
    if bad:
        raise ValueError(f"snapshot steps must lie in [{start_step}, {config.steps}], got {bad}")
    device = model.device
    data = data.to(device)
    keep = {n: m.to(device, torch.bool) for n, m in (masks or {}).items()}
    flat = FlatParameters({n: p.detach().to(device, model.dtype) for n, p in params.items()}, keep)
    weights = flat.views
    opt = flat.optimizer(
        config.optimizer,
        config.lr if lr is None else lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    orders = _batch_orders(seeds, len(data.y_train), config.batch_size, config.steps, device)
    snapshots = Snapshots(snapshot_steps)
    members_index = torch.arange(members)
    history: list[tuple[int, Tensor, Tensor, Tensor, Tensor]] = []
    running = torch.zeros(members, device=device)
    count = 0
    start = time.perf_counter()

    def record(step: int) -> None:
        vl, va = evaluate(model, weights, data.x_val, data.y_val, data.regression)
        tl, ta = evaluate(model, weights, data.x_test, data.y_test, data.regression)
        history.append((step, vl, va, tl, ta))

    group = opt.param_groups[0]
    for step in range(start_step, config.steps + 1):
        state = StepState(step, weights, members_index)
        for hook in (snapshots, *hooks):
            hook(state)
        if step % config.eval_every == 0 or step == config.steps:
            record(step)
            train_loss = (running / max(count, 1)).cpu()
            running.zero_()
            count = 0
        if step == config.steps:
            break
        group["lr"] = (lr or config.lr) if constant_lr else config.lr_at(step, lr)
        idx = orders[step].reshape(-1)
        with torch.no_grad():
            xb = data.x_train.index_select(0, idx).view(members, -1, *data.x_train.shape[1:])
            yb = data.y_train.index_select(0, idx).view(members, -1, *data.y_train.shape[1:])
            outputs, pullback = model.vjp(weights, xb)
            per_member, grad_outputs = _mean_loss_and_grad(outputs, yb, data.regression)
            pullback(grad_outputs, flat.grads)
            flat.mask_grad()
            opt.step()
            running += per_member
        count += 1
    steps, vl, va, tl, ta = zip(*history, strict=True)
    final = {n: p.detach().clone() for n, p in weights.items()}  # not views of the buffer
    diverged = ~torch.stack([torch.isfinite(p.reshape(members, -1)).all(1) for p in final.values()])
    return FitResult(
        final,
        snapshots.taken,  # type: ignore[arg-type]  # named weights, by step
        list(steps),
        torch.stack(vl, 1),
        torch.stack(va, 1),
        torch.stack(tl, 1),
        torch.stack(ta, 1),
        train_loss,
        diverged.any(0).cpu() | ~torch.isfinite(torch.stack(tl, 1)[:, -1]),
        time.perf_counter() - start,
    )
