"""Exact classification of training endpoints from their gradients and Hessian spectra.

Classes (MISSION.md, E1):

* ``global_min``    — loss below ``tol_global`` at an endpoint the trainer stopped as global or
  converged (with certification: a certified one; a member that ran out of budget is never a
  global minimum, however small its loss);
* ``local_min``     — a critical point (the trainer reached ``tol_grad``) above that loss whose
  smallest Hessian eigenvalue is >= -tol_eig * largest: a bad local minimum (positive
  semidefinite up to the tolerance; overparameterized minima are degenerate, so zero eigenvalues
  are expected);
* ``saddle``        — a critical point with a clearly negative eigenvalue;
* ``flat_channel``  — a member on one of the channels to infinity of Martinelli et al.
  (:mod:`escapelab.landscape.channels`): two units of one layer whose incoming weights merge
  (cosine > 1 - channel_cos) while their outgoing weights are large (> channel_out) and of
  opposite sign (odd activations: equally, antiparallel with outgoing weights of one sign),
  approaching a derivative unit a * sigma'(w.x) x, or, for odd activations, one unit whose
  incoming weights vanish while its outgoing weight grows, approaching a linear unit. Besides
  that shape, the evidence is either dynamic (out of budget, with the parameter norm growing
  while the loss plateaus over the second half of training or over the certification rounds
  after the first) or geometric: the loss falls, and never rises, as the channel is
  continued toward infinity (``channel_drop`` > 0). The geometric test also applies to
  members the trainer stopped as converged: far along a channel the gradient falls below any
  tolerance, and such a point is no minimum. Clusters of three or more units (a second
  difference tending to a second-derivative unit) are seen by the dynamic test only;
* ``not_converged`` — ran out of steps without any of the above;
* ``diverged``      — NaN/inf, or parameter norm past the trainer's bound without the channel
  signature.

Every endpoint keeps the numbers its class was decided on. When the trainer held some
coordinates fixed (``TrainResult.free``, e.g. the pruned weights of a lottery ticket), the
eigenvalues are those of each member's Hessian restricted to its free coordinates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from escapelab.landscape.channels import channel_drop, find_channels
from escapelab.optim.full_batch import TrainResult
from escapelab.problems.objective import Objective

CLASSES = ("global_min", "local_min", "saddle", "flat_channel", "not_converged", "diverged")


@dataclass(frozen=True)
class ClassifyConfig:
    """Tolerances of the classification; see the module docstring for their roles."""

    tol_global: float = 1e-10
    tol_eig: float = 1e-6
    channel_cos: float = 1e-2
    channel_out: float = 3.0
    channel_norm_growth: float = 1.05
    channel_loss_change: float = 0.05


@dataclass(frozen=True)
class Endpoint:
    """One member's endpoint: its class and the numbers behind it."""

    kind: str
    loss: float
    grad_norm: float
    eig_min: float
    eig_max: float
    n_negative: int
    param_norm: float
    steps: int
    refine_steps: int
    status: str
    # with certification: the gradient's infinity norm, whether it is at most tol_cert, and the
    # certification rounds the member needed (None / nan: the trainer did not certify)
    grad_inf: float = float("nan")
    certified: bool | None = None
    rounds: int = 0
    # the loss decrease along the member's channel-shaped units continued toward infinity
    # (:func:`escapelab.landscape.channels.channel_drop`; nan: no channel-shaped units)
    channel_drop: float = float("nan")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _plateau_with_growth(result: TrainResult, i: int, cfg: ClassifyConfig) -> bool:
    """Member i's parameter norm grew while its loss changed little: over the second half of
    its training in steps, or over the certification rounds after the first.

    The half is taken in steps, not in records: certification appends one record per round of
    thousands of steps, and a plateau reached late (the loss creeping toward a channel's limit
    while the norm keeps growing) must be judged on those rounds, not on the densely recorded
    first phase. The rounds are also judged on their own, from the record after round 1: rounds
    of Newton iterations alone take no first-order steps, and a member they carry along a
    channel (its norm growing tenfold while the loss stays put) would otherwise be judged on
    the end of the first phase, where its loss was still falling. Fewer than two records in a
    window, or no history (a hand-made result), is no evidence."""
    if result.history_norm is None or result.history_loss is None:
        return False
    norms, losses = result.history_norm[i], result.history_loss[i]
    steps = torch.tensor(result.history_step[: len(norms)], dtype=torch.float64)
    ok = torch.isfinite(norms) & torch.isfinite(losses)
    if int(ok.sum()) < 4:
        return False
    starts = []
    late = ((steps >= steps[ok][-1] / 2) & ok).nonzero().squeeze(1)
    if len(late) >= 2:
        starts.append(int(late[0]))
    if result.history_rounds_from is not None and len(norms) - result.history_rounds_from >= 2:
        starts.append(result.history_rounds_from)
    last = int(ok.nonzero()[-1])
    for start in starts:
        if not bool(ok[start]) or start >= last:
            continue
        grew = norms[last] >= cfg.channel_norm_growth * norms[start]
        change = (losses[start] - losses[last]).abs()
        if grew and change <= cfg.channel_loss_change * losses[start].abs():
            return True
    return False


def _certification(result: TrainResult, i: int) -> dict[str, object]:
    """Member i's certification numbers, when the trainer certified."""
    if result.certified is None or result.grad_inf is None or result.rounds is None:
        return {}
    return {
        "grad_inf": float(result.grad_inf[i]),
        "certified": bool(result.certified[i]),
        "rounds": int(result.rounds[i]),
    }


def classify(
    objective: Objective, result: TrainResult, config: ClassifyConfig | None = None
) -> list[Endpoint]:
    """Classify every member's endpoint in ``result`` using exact Hessians of ``objective``."""
    cfg = config or ClassifyConfig()
    theta = result.theta
    objective = objective.to(theta.dtype)
    n = theta.shape[0]
    finite = torch.isfinite(theta).all(1) & torch.isfinite(result.loss)
    eig_min = torch.full((n,), float("nan"), dtype=torch.float64)
    eig_max = eig_min.clone()
    n_neg = torch.zeros(n, dtype=torch.long)
    rows = finite.nonzero().squeeze(1)
    if len(rows):
        hessians = objective.hessian(theta[rows])
        if result.free is None:
            spectra = list(torch.linalg.eigvalsh(hessians).to(torch.float64).cpu())
        else:  # each member's Hessian restricted to its own free coordinates
            free = result.free[rows].to(hessians.device)
            spectra = [
                torch.linalg.eigvalsh(h[f][:, f]).to(torch.float64).cpu()
                for h, f in zip(hessians, free, strict=True)
            ]
        for row, eigs in zip(rows.tolist(), spectra, strict=True):
            eig_min[row], eig_max[row] = eigs[0], eigs[-1]
            thresh = cfg.tol_eig * max(abs(float(eigs[-1])), torch.finfo(torch.float64).tiny)
            n_neg[row] = int((eigs < -thresh).sum())
    endpoints = []
    for i in range(n):
        loss = float(result.loss[i])
        status = result.status[i]
        drop = float("nan")
        if not bool(finite[i]):
            kind = "diverged"
        elif loss < cfg.tol_global and status in ("global", "converged"):
            kind = "global_min"
        else:
            channels = find_channels(objective.arch, theta[i], cfg.channel_cos, cfg.channel_out)
            if channels:
                free = None if result.free is None else result.free[i]
                drop = channel_drop(objective, theta[i], channels, free)
            on_channel = bool(channels) and (
                drop > 0
                or status == "diverged"
                or (status == "budget" and _plateau_with_growth(result, i, cfg))
            )
            if on_channel:
                kind = "flat_channel"
            elif status == "converged":
                kind = "saddle" if n_neg[i] > 0 else "local_min"
            else:
                kind = "diverged" if status == "diverged" else "not_converged"
        endpoints.append(
            Endpoint(
                kind=kind,
                loss=loss,
                grad_norm=float(result.grad_norm[i]),
                eig_min=float(eig_min[i]),
                eig_max=float(eig_max[i]),
                n_negative=int(n_neg[i]),
                param_norm=float(theta[i].norm()),
                steps=int(result.steps[i]),
                refine_steps=int(result.refine_steps[i]),
                status=status,
                channel_drop=drop,
                **_certification(result, i),
            )
        )
    return endpoints
