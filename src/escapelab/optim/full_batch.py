"""Train every member of an ensemble to a true endpoint, freezing members as they stop.

Phase 1 is full-batch first-order training (Adam or gradient descent) in the precision of
``theta0``; phase 2 is the damped Newton refinement of :mod:`escapelab.optim.refine`, always in
float64 (a float32 run is promoted for it, so its endpoints can still reach gradient norms of
1e-10; the result then holds float64 parameters). After every evaluation each member is checked:

* ``global``    — loss below ``tol_global``;
* ``converged`` — gradient norm at or below ``tol_grad`` (a critical point, of any kind);
* ``diverged``  — NaN/inf, or parameter norm above ``max_norm`` (recorded, never raised);
* ``budget``    — still running when both phases ran out of steps, or stalled in the
  refinement (its damping at the cap: no trial step lowers the loss at its resolution).

Stopped members are written back and dropped from the active set, so the rest run on a smaller
ensemble. With ``handoff_grad`` > 0 a member whose gradient norm falls to it leaves phase 1 at
once and waits for the refinement: near a degenerate minimum (an overparameterized student's
global minimum) gradient descent slows to a crawl where Newton's method converges in a few
iterations.

A history of loss and parameter norm every ``record_every`` steps is kept for the
flat-channel diagnosis of :mod:`escapelab.landscape.classify`.

**Certification** (``certify_rounds`` > 0). A loss below ``tol_global`` or a gradient norm of
1e-10 is not yet a true endpoint: a global minimum stopped at loss 1e-9 can still have gradient
norms of 1e-5. With certification every member that did not diverge is then driven on, in
float64, until its gradient's infinity norm is at most ``tol_cert`` (default 1e-12): its
endpoint is *certified*; so is a member whose loss is at rounding level (at most ``tol_zero``):
the loss is a sum of squares, so only a global minimum can have it, and there the gradient of
a degenerate (overparameterized) minimum may keep shrinking only linearly, toward its own
rounding floor near 1e-12. Round 1 is the damped Newton refinement alone (``refine_steps``
iterations; from a near-minimum it converges quadratically); each later round first continues
the first-order phase for ``steps`` steps (to leave a saddle or a plateau the refinement could
not), then refines again; settled members (below ``tol_global``, or with no clearly negative
Hessian eigenvalue) refine only, for longer (:func:`_round_groups`). A member still
uncertified after ``certify_rounds`` rounds ends with status ``budget``, whatever its loss, so
"ran out of budget" is never counted as a global minimum. Why rounds of the two phases rather
than a gradient-flow ODE solver (as MLPGradientFlow.jl): the damped Newton step already is a
trust-region method on the exact Hessian, and the members that resist it sit on plateaus that
first-order steps leave faster.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from escapelab.config import constraint
from escapelab.optim.hooks import Hook, StepState
from escapelab.optim.refine import NU_MAX, NewtonRefiner
from escapelab.optim.steppers import make_stepper
from escapelab.problems.objective import Objective

STATUSES = ("global", "converged", "diverged", "budget")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: first-order phase, refinement, and the per-member stopping rules.

    The field metadata (bounds, help) is what :func:`escapelab.config.build` checks when a spec
    embeds this config, so experiments validate these fields without copying them.
    """

    optimizer: Literal["adam", "gd"] = "adam"
    lr: float = field(default=0.01, metadata=constraint(gt=0))
    steps: int = field(default=5000, metadata=constraint(ge=0, help="first-order steps"))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=constraint(ge=0, lt=1))
    eps: float = field(default=1e-8, metadata=constraint(gt=0))
    refine_steps: int = field(
        default=50, metadata=constraint(ge=0, help="damped Newton iterations on the exact Hessian")
    )
    tol_grad: float = field(default=1e-10, metadata=constraint(gt=0))
    tol_global: float = field(default=1e-10, metadata=constraint(gt=0))
    handoff_grad: float = field(
        default=0.0,
        metadata=constraint(
            ge=0, help="gradient norm at which a member leaves phase 1 for the refinement"
        ),
    )
    max_norm: float = field(default=1e3, metadata=constraint(gt=0))
    record_every: int = field(default=100, metadata=constraint(ge=1))
    certify_rounds: int = field(
        default=0,
        metadata=constraint(ge=0, help="rounds that drive members to certified endpoints"),
    )
    tol_cert: float = field(
        default=1e-12,
        metadata=constraint(gt=0, help="gradient infinity norm of a certified endpoint"),
    )
    tol_zero: float = field(
        default=1e-13, metadata=constraint(ge=0, help="a loss at rounding level: certified global")
    )
    tol_eig: float = field(
        default=1e-6, metadata=constraint(ge=0, help="relative to the largest Hessian eigenvalue")
    )


@dataclass
class TrainResult:
    """Endpoints and how each member got there; tensors have the ensemble axis first."""

    theta: Tensor
    loss: Tensor
    grad_norm: Tensor
    status: list[str]
    steps: Tensor
    refine_steps: Tensor
    history_step: list[int] = field(default_factory=list)
    history_loss: Tensor | None = None
    history_norm: Tensor | None = None
    wall_time: float = 0.0
    free: Tensor | None = None  # (E, P) bool: the coordinates that trained (None: all)
    # with certification (certify_rounds > 0), per member: certified, the gradient's infinity
    # norm at the endpoint and the certification rounds it needed (0: certified at once)
    certified: Tensor | None = None
    grad_inf: Tensor | None = None
    rounds: Tensor | None = None
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # with certification: the history column of the first certification round (one per round
    # follows), so a plateau reached during the rounds can be read on their columns alone
    history_rounds_from: int | None = None

    def seconds_per_member(self) -> dict[str, float]:
        """Each phase's wall time (``phase_seconds``: first order, refinement, certification,
        and classification when the caller timed it) shared equally among the members, as
        ``seconds_<phase>``: what a record of one member carries, so that a store tells where
        a sweep's time went."""
        n = max(1, self.theta.shape[0])
        return {f"seconds_{phase}": t / n for phase, t in self.phase_seconds.items()}


class _Ledger:
    """Final values of stopped members and the map from active rows to member indices."""

    def __init__(self, theta0: Tensor, n_checkpoints: int):
        n = theta0.shape[0]
        self.theta = theta0.detach().clone()
        self.loss = torch.full((n,), float("nan"), dtype=theta0.dtype, device=theta0.device)
        self.grad_norm = torch.full_like(self.loss, float("nan"))
        self.status = ["budget"] * n
        self.steps = torch.zeros(n, dtype=torch.long)
        self.refine_steps = torch.zeros(n, dtype=torch.long)
        self.active = torch.arange(n, device=theta0.device)
        self.parked = self.active[:0]
        self.hist_loss = torch.full((n, n_checkpoints), float("nan"), dtype=theta0.dtype)
        self.hist_norm = torch.full_like(self.hist_loss, float("nan"))
        self.hist_step: list[int] = []

    def park(self, rows: Tensor) -> Tensor:
        """Set active rows ``rows`` aside (their values are written back): they skip the rest
        of phase 1 and rejoin for the refinement (:meth:`unpark`). Returns the rows kept."""
        parking = torch.zeros(len(self.active), dtype=torch.bool, device=self.active.device)
        parking[rows] = True
        self.parked = torch.cat([self.parked, self.active[parking]])
        self.active = self.active[~parking]
        return (~parking).nonzero().squeeze(1)

    def release(self, rows: Tensor) -> Tensor:
        """Drop active rows ``rows`` (bool mask) for the rest of this run, their status left as
        it is (``budget``); returns the rows kept."""
        self.active = self.active[~rows]
        return (~rows).nonzero().squeeze(1)

    def unpark(self) -> None:
        """The parked members are active again, after those that ran phase 1 to its end."""
        self.active, self.parked = torch.cat([self.active, self.parked]), self.parked[:0]

    def promote(self, dtype: torch.dtype) -> None:
        """Hold final values in ``dtype`` from now on (for a float64 refinement)."""
        self.theta, self.loss = self.theta.to(dtype), self.loss.to(dtype)
        self.grad_norm = self.grad_norm.to(dtype)

    def record(self, step: int, theta: Tensor, loss: Tensor) -> None:
        k = len(self.hist_step)
        if k < self.hist_loss.shape[1]:
            self.hist_step.append(step)
            idx = self.active.cpu()
            self.hist_loss[idx, k] = loss.detach().cpu()
            self.hist_norm[idx, k] = theta.norm(dim=1).cpu()

    def settle(
        self, theta: Tensor, loss: Tensor, grad: Tensor, cfg: TrainConfig, certifying: bool
    ) -> Tensor:
        """Write back every active member, mark those that stop; return the rows still active.
        While ``certifying`` only a certified endpoint (:func:`_certified`) stops a member; a
        small loss above rounding level does not."""
        gnorm = grad.norm(dim=1)
        pnorm = theta.norm(dim=1)
        diverged = ~torch.isfinite(loss) | ~torch.isfinite(gnorm) | (pnorm > cfg.max_norm)
        if certifying:
            is_global = torch.zeros_like(diverged)
            converged = ~diverged & _certified(loss, grad, cfg)
        else:
            is_global = ~diverged & (loss < cfg.tol_global)
            converged = ~diverged & ~is_global & (gnorm <= cfg.tol_grad)
        self.theta[self.active] = theta
        self.loss[self.active] = loss
        self.grad_norm[self.active] = gnorm
        for mask, name in ((diverged, "diverged"), (is_global, "global"), (converged, "converged")):
            for i in self.active[mask].tolist():
                self.status[i] = name
        keep = (~(diverged | is_global | converged)).nonzero().squeeze(1)
        self.active = self.active[keep]
        return keep


def train(
    objective: Objective,
    theta0: Tensor,
    config: TrainConfig | None = None,
    progress: bool = False,
    free: Tensor | None = None,
    hooks: Sequence[Hook] = (),
) -> TrainResult:
    """Train all members of ``theta0`` (E, P) on ``objective``; see the module docstring.

    ``free`` (E, P) bool, optional: the coordinates that train; the others keep their values
    in ``theta0`` (the pruned, zero weights of a lottery ticket, as
    :func:`escapelab.nets.views.mask_to_flat` lays a mask out). Gradients, stopping rules and
    the refinement's Hessians are then those of each member's own subspace, so a masked
    network is driven to a critical point of the function it can represent.

    ``hooks`` (:mod:`escapelab.optim.hooks`) see the first-order phase: after every step, the
    active members' flat weights, their member indices and their losses.
    """
    cfg = config or TrainConfig()
    if free is not None and free.shape != theta0.shape:
        raise ValueError(f"free has shape {tuple(free.shape)}, theta0 {tuple(theta0.shape)}")
    result = _run(objective, theta0, cfg, progress, free, hooks, certifying=False)
    if cfg.certify_rounds:
        result = _certify(objective, result, cfg, free)
    return result


def _run(
    objective: Objective,
    theta0: Tensor,
    cfg: TrainConfig,
    progress: bool,
    free: Tensor | None,
    hooks: Sequence[Hook],
    certifying: bool,
) -> TrainResult:
    """Phase 1 and phase 2 for every member of theta0; see :func:`train`."""
    start = time.perf_counter()
    ledger = _Ledger(theta0, cfg.steps // max(cfg.record_every, 1) + 2)
    theta = theta0.detach().clone()
    active_free = None if free is None else free.to(theta.device, theta.dtype)
    stepper = make_stepper(cfg.optimizer, cfg.lr, cfg.betas, cfg.eps)
    bar = tqdm(total=cfg.steps + cfg.refine_steps, disable=not progress, desc="train", leave=False)
    with objective.step_loop(theta):
        for step in range(cfg.steps + 1):
            loss, grad = objective.loss_and_grad(theta)
            if active_free is not None:
                grad = grad * active_free
            if step % cfg.record_every == 0:
                ledger.record(step, theta, loss)
            if hooks:
                state = StepState(step, theta, ledger.active, loss)
                for hook in hooks:
                    hook(state)
            ledger.steps[ledger.active.cpu()] = step
            keep = ledger.settle(theta, loss, grad, cfg, certifying)
            if cfg.handoff_grad > 0 and cfg.refine_steps > 0:
                near = grad[keep].norm(dim=1) <= cfg.handoff_grad
                if near.any():
                    keep = keep[ledger.park(near.nonzero().squeeze(1))]
            if len(keep) < theta.shape[0]:
                theta, grad = theta[keep], grad[keep]
                stepper.keep(keep)
                if active_free is not None:
                    active_free = active_free[keep]
            if step == cfg.steps or len(keep) == 0:
                break
            stepper.step(theta, grad)
            bar.update()
    first_order_s = time.perf_counter() - start
    if len(ledger.parked):
        ledger.unpark()
        theta = ledger.theta[ledger.active]
        active_free = None if free is None else free.to(theta.device, theta.dtype)[ledger.active]
    if len(ledger.active) and cfg.refine_steps > 0:
        # the refinement and everything after it run in float64, whatever phase 1 used
        if theta.dtype != torch.float64:
            objective, theta = objective.to(torch.float64), theta.to(torch.float64)
            ledger.promote(torch.float64)
        refiner = NewtonRefiner(objective, theta, *objective.loss_and_grad(theta), free=active_free)
        for it in range(1, cfg.refine_steps + 1):
            refiner.step()
            ledger.refine_steps[ledger.active.cpu()] = it
            keep = ledger.settle(refiner.theta, refiner.loss, refiner.grad, cfg, certifying)
            # a member whose damping is at its cap had every recent trial rejected: the loss
            # cannot be lowered at its resolution there (far along a channel), so it stops
            keep = keep[ledger.release(refiner.nu[keep] >= NU_MAX)]
            bar.update()
            if len(keep) == 0:
                break
            if len(keep) < refiner.theta.shape[0]:
                refiner.keep(keep)
    bar.close()
    n_hist = len(ledger.hist_step)
    wall = time.perf_counter() - start
    return TrainResult(
        theta=ledger.theta,
        loss=ledger.loss,
        grad_norm=ledger.grad_norm,
        status=ledger.status,
        steps=ledger.steps,
        refine_steps=ledger.refine_steps,
        history_step=ledger.hist_step,
        history_loss=ledger.hist_loss[:, :n_hist],
        history_norm=ledger.hist_norm[:, :n_hist],
        wall_time=wall,
        free=None if free is None else free.to(torch.bool),
        phase_seconds={"first_order": first_order_s, "refine": wall - first_order_s},
    )


def _certified(loss: Tensor, grad: Tensor, cfg: TrainConfig) -> Tensor:
    """Certified endpoints: gradient infinity norm at most tol_cert, or a loss at rounding level
    (at most tol_zero), which only a global minimum of a non-negative loss can have."""
    return (grad.abs().amax(dim=1) <= cfg.tol_cert) | (loss <= cfg.tol_zero)


class _History:
    """The loss and parameter-norm history of a result, extended by one column after every
    certification round, so the flat-channel test of :mod:`escapelab.landscape.classify` sees a
    norm that keeps growing on a loss plateau during the rounds too."""

    def __init__(self, result: TrainResult):
        self.step = list(result.history_step)
        self.loss, self.norm = result.history_loss, result.history_norm

    def append(self, step: int, theta: Tensor, loss: Tensor) -> None:
        if self.loss is None or self.norm is None:
            return
        self.step.append(step)
        column = loss.detach().to(self.loss.dtype).cpu().unsqueeze(1)
        self.loss = torch.cat([self.loss, column], dim=1)
        norms = theta.norm(dim=1).to(self.norm.dtype).cpu().unsqueeze(1)
        self.norm = torch.cat([self.norm, norms], dim=1)


SETTLED_REFINE = 30  # refinement iterations per round of a settled member, x refine_steps


def _round_groups(
    objective: Objective, theta: Tensor, todo: Tensor, r: int, cfg: TrainConfig, free: Tensor | None
) -> list[tuple[Tensor, TrainConfig]]:
    """The members ``todo`` of certification round ``r``, in groups with the configuration of
    each.

    Round 1 is refinement only. Later rounds continue the first-order phase first, except for
    *settled* members: those below ``tol_global`` or whose Hessian has no clearly negative
    eigenvalue (none below ``-tol_eig`` times the largest; with ``free``, of the Hessian
    restricted to each member's free coordinates). First-order steps are there to
    leave saddles and plateaus, and a settled member has none to leave; near a zero-loss
    minimum Adam's normalised step keeps a length of about ``lr`` however small the gradient
    and throws a member back up by orders of magnitude. Damped Newton iterations alone drive
    settled members on, but slowly where the minimum is degenerate or the valley long: a few %
    of loss per iteration on a degenerate global minimum (180 to 450 iterations from the
    first-order endpoint to a loss of 1e-13 on the default width-sweep), and 2,000 to 3,000
    iterations along the nearly flat valleys that lead an embedded bad minimum of ``escape``
    into a channel to infinity. So they get ``SETTLED_REFINE`` times ``refine_steps``
    iterations per round in place of the first-order steps.
    """
    base = replace(cfg, certify_rounds=0)
    if r == 1:
        return [(todo, replace(base, steps=0))]
    loss = objective.loss(theta[todo])
    hessian = objective.hessian(theta[todo])
    if free is not None:
        mask = free.to(todo.device)[todo].to(hessian)
        hessian = hessian * mask.unsqueeze(2) * mask.unsqueeze(1)
    eigs = torch.linalg.eigvalsh(hessian)
    psd = eigs[:, 0] >= -cfg.tol_eig * eigs[:, -1].abs()
    settled = (loss < cfg.tol_global) | psd
    groups = [
        (todo[settled], replace(base, steps=0, refine_steps=SETTLED_REFINE * cfg.refine_steps)),
        (todo[~settled], base),
    ]
    return [(group, group_cfg) for group, group_cfg in groups if len(group)]


def _certify(
    objective: Objective, result: TrainResult, cfg: TrainConfig, free: Tensor | None
) -> TrainResult:
    """Drive every member that did not diverge to a certified endpoint, in rounds (see the
    module docstring); the result holds float64 parameters."""
    start = time.perf_counter()
    objective = objective.to(torch.float64)
    theta = result.theta.to(torch.float64).clone()
    mask = None if free is None else free.to(theta.device, torch.float64)
    loss, grad = objective.loss_and_grad(theta)
    if mask is not None:
        grad = grad * mask
    status = list(result.status)
    alive = torch.tensor([s != "diverged" for s in status], device=theta.device)
    alive &= torch.isfinite(loss) & torch.isfinite(grad).all(dim=1)
    certified = alive & _certified(loss, grad, cfg)
    steps, refine_steps = result.steps.clone(), result.refine_steps.clone()
    rounds = torch.zeros(theta.shape[0], dtype=torch.long)
    todo = (alive & ~certified).nonzero().squeeze(1)
    history = _History(result)
    for r in range(1, cfg.certify_rounds + 1):
        if len(todo) == 0:
            break
        still = []
        for group, round_cfg in _round_groups(objective, theta, todo, r, cfg, free):
            sub = _run(
                objective,
                theta[group],
                round_cfg,
                False,
                None if free is None else free[group],
                (),
                certifying=True,
            )
            theta[group] = sub.theta
            rows = group.cpu()
            steps[rows] += sub.steps
            refine_steps[rows] += sub.refine_steps
            rounds[rows] = r
            outcome = torch.tensor([s == "converged" for s in sub.status], device=theta.device)
            certified[group[outcome]] = True
            for k, i in enumerate(group.tolist()):
                if sub.status[k] == "diverged":
                    status[i] = "diverged"
            still.append(
                group[torch.tensor([s == "budget" for s in sub.status], device=theta.device)]
            )
        todo = torch.cat(still).sort().values
        history.append(int(steps.max()), theta, objective.loss(theta))
    loss, grad = objective.loss_and_grad(theta)
    if mask is not None:
        grad = grad * mask
    for i in range(theta.shape[0]):
        if bool(certified[i]):
            status[i] = "global" if float(loss[i]) < cfg.tol_global else "converged"
        elif status[i] != "diverged":
            status[i] = "budget"
    certify_s = time.perf_counter() - start
    return replace(
        result,
        theta=theta,
        loss=loss,
        grad_norm=grad.norm(dim=1),
        status=status,
        steps=steps,
        refine_steps=refine_steps,
        history_step=history.step,
        history_loss=history.loss,
        history_norm=history.norm,
        history_rounds_from=len(result.history_step),
        wall_time=result.wall_time + certify_s,
        certified=certified.cpu(),
        grad_inf=grad.abs().amax(dim=1).cpu(),
        rounds=rounds,
        phase_seconds={**result.phase_seconds, "certify": certify_s},
    )
