"""One hook mechanism for both trainers: look at the weights while an ensemble trains.

A hook is any callable taking a :class:`StepState`. The full-batch trainer
(:func:`escapelab.optim.full_batch.train`, first-order phase) and the mini-batch trainer
(:func:`escapelab.optim.minibatch.fit`) call every hook once per step, after ``state.step``
updates and before the next one (the last call is at the final step), with the weights of the
members still training: a flat (E_active, P) tensor in the full-batch trainer, which drops
members as they stop (``state.members`` says which rows are which), a dict of named (E, ...)
tensors in the mini-batch one. Hooks observe; they must not modify the weights.

:func:`every` and :func:`at` choose when a hook runs, and :class:`Snapshots` keeps copies of
the weights at chosen steps (the mini-batch trainer takes IMP's rewind point with one). So a
per-step curvature probe, an extra evaluation or a saved trajectory is the same few lines for
either trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from torch import Tensor

Weights = Tensor | Mapping[str, Tensor]


@dataclass(frozen=True)
class StepState:
    """Where training is: ``step`` updates done, the active members' ``weights`` (views: copy
    what you keep), which ensemble members the rows are, and their losses where the trainer
    has them (the full-batch loss; None in the mini-batch trainer)."""

    step: int
    weights: Weights
    members: Tensor
    loss: Tensor | None = None


Hook = Callable[[StepState], None]


def every(n: int, hook: Hook) -> Hook:
    """``hook`` at steps 0, n, 2n, ..."""
    if n < 1:
        raise ValueError(f"every: n must be >= 1, got {n}")

    def run(state: StepState) -> None:
        if state.step % n == 0:
            hook(state)

    return run


def at(steps: Iterable[int], hook: Hook) -> Hook:
    """``hook`` at the given steps only."""
    chosen = frozenset(int(s) for s in steps)

    def run(state: StepState) -> None:
        if state.step in chosen:
            hook(state)

    return run


def copy_weights(weights: Weights) -> Weights:
    """Detached copies of a flat tensor or of every named tensor."""
    if isinstance(weights, Tensor):
        return weights.detach().clone()
    return {n: p.detach().clone() for n, p in weights.items()}


class Snapshots:
    """Copies of the weights at ``steps``: ``taken[step]`` holds the weights and ``rows[step]``
    the members they belong to (all members, in the mini-batch trainer)."""

    def __init__(self, steps: Iterable[int]) -> None:
        self.steps = frozenset(int(s) for s in steps)
        self.taken: dict[int, Weights] = {}
        self.rows: dict[int, Tensor] = {}

    def __call__(self, state: StepState) -> None:
        if state.step in self.steps:
            self.taken[state.step] = copy_weights(state.weights)
            self.rows[state.step] = state.members.clone()
