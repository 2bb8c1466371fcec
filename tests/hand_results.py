"""Training results built by hand, for classification tests on planted points."""

from __future__ import annotations

import torch

from escapelab.optim.full_batch import TrainResult
from escapelab.problems.objective import Objective


def hand_result(
    obj: Objective,
    theta: torch.Tensor,
    status: list[str],
    history_norm: torch.Tensor | None = None,
    history_loss: torch.Tensor | None = None,
) -> TrainResult:
    """A TrainResult built by hand, with the loss and gradient norm of ``theta``."""
    loss, grad = obj.loss_and_grad(theta)
    n = theta.shape[0]
    n_hist = 0 if history_norm is None else history_norm.shape[1]
    return TrainResult(
        theta=theta,
        loss=loss,
        grad_norm=grad.norm(dim=1),
        status=status,
        steps=torch.full((n,), 100, dtype=torch.long),
        refine_steps=torch.zeros(n, dtype=torch.long),
        history_step=list(range(0, 10 * n_hist, 10)),
        history_loss=history_loss,
        history_norm=history_norm,
    )
