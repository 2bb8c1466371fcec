"""Certified endpoints: members driven on until the gradient's infinity norm is at most
tol_cert (or the loss is at rounding level), in rounds, and never a global minimum on budget."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from escapelab.landscape.classify import ClassifyConfig, classify
from escapelab.nets.mlp import Architecture
from escapelab.optim.full_batch import TrainConfig, train
from escapelab.problems.teacher import make_teacher, student_objective

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def problem():
    teacher = make_teacher(d=2, width=2, activation="tanh", incoming="orthonormal", seed=1)
    arch = Architecture(2, (2,), 1, "tanh", bias=False)
    objective = student_objective(teacher, arch, 300, seed=0)
    return teacher, arch, objective


def test_without_certification_nothing_changes(problem) -> None:
    _, arch, objective = problem
    result = train(objective, arch.init(3, seed=0), TrainConfig(steps=200, refine_steps=10))
    assert result.certified is None and result.grad_inf is None and result.rounds is None
    assert set(result.phase_seconds) == {"first_order", "refine"}


def test_members_end_certified_and_keep_the_numbers(problem) -> None:
    teacher, arch, objective = problem
    theta0 = arch.init(6, seed=3)
    theta0[0] = teacher.theta + 1e-3  # starts next to the global minimum
    cfg = TrainConfig(steps=300, refine_steps=40, tol_global=1e-9, certify_rounds=2)
    result = train(objective, theta0, cfg)
    assert result.certified is not None and bool(result.certified.all())
    loss, grad = objective.loss_and_grad(result.theta)
    for i in range(6):
        assert float(grad[i].abs().max()) <= 1e-12 or float(loss[i]) <= cfg.tol_zero
        assert result.status[i] == ("global" if float(loss[i]) < cfg.tol_global else "converged")
    assert torch.equal(result.grad_inf, grad.abs().amax(1))
    # the global member was stopped at loss < 1e-9 by phase 1; certification took it further
    assert float(result.loss[0]) <= cfg.tol_zero and int(result.rounds[0]) >= 1
    assert "certify" in result.phase_seconds
    endpoints = classify(objective, result, ClassifyConfig(tol_global=1e-9))
    assert endpoints[0].kind == "global_min" and endpoints[0].certified is True
    assert all(e.grad_inf == float(result.grad_inf[i]) for i, e in enumerate(endpoints))


def test_a_member_that_cannot_certify_is_budget_and_never_global(problem) -> None:
    teacher, _, objective = problem
    theta0 = (teacher.theta + 1e-4).expand(2, -1).clone()
    # no refinement and no first-order steps: nothing can certify it, however small its loss
    cfg = TrainConfig(steps=0, refine_steps=0, tol_global=1e-3, certify_rounds=2, tol_zero=0.0)
    result = train(objective, theta0, cfg)
    assert result.status == ["budget", "budget"] and not bool(result.certified.any())
    assert float(result.loss.max()) < cfg.tol_global
    kinds = {e.kind for e in classify(objective, result, ClassifyConfig(tol_global=1e-3))}
    assert kinds == {"not_converged"}


def test_rounds_extend_the_history_the_channel_test_reads(problem) -> None:
    _, arch, objective = problem
    cfg = TrainConfig(steps=100, refine_steps=5, record_every=10, certify_rounds=3, tol_zero=0.0)
    plain = train(objective, arch.init(2, seed=4), replace(cfg, certify_rounds=0))
    result = train(objective, arch.init(2, seed=4), cfg)
    rounds = int(result.rounds.max())
    assert len(result.history_step) == len(plain.history_step) + rounds
    assert result.history_step[: len(plain.history_step)] == plain.history_step
    assert result.history_rounds_from == len(plain.history_step)  # where the rounds' columns start
    # the last column is the endpoint's own loss and parameter norm
    last = result.history_loss[:, -1]
    assert torch.allclose(last, objective.loss(result.theta).to(last.dtype), rtol=1e-12)
    assert torch.allclose(result.history_norm[:, -1], result.theta.norm(dim=1).to(last.dtype))


def test_handoff_sends_members_near_a_minimum_to_the_refinement(problem) -> None:
    teacher, arch, objective = problem
    theta0 = arch.init(4, seed=5)
    theta0[1] = teacher.theta + 1e-3  # starts next to the global minimum
    cfg = TrainConfig(optimizer="gd", lr=0.2, steps=1500, refine_steps=40, tol_global=1e-12)
    plain = train(objective, theta0, cfg)
    handed = train(objective, theta0, replace(cfg, handoff_grad=1e-3))
    # the member next to the minimum left phase 1 at once and still ended at the minimum
    assert int(handed.steps[1]) <= 5 < int(plain.steps[1])
    assert handed.status[1] == "global" and float(handed.loss[1]) < 1e-12
    # every member ends where it would have, at a critical point or the minimum
    assert all(s in ("global", "converged") for s in handed.status)
    grads = objective.loss_and_grad(handed.theta)[1].norm(dim=1)
    for i, s in enumerate(handed.status):
        assert s == "global" or float(grads[i]) <= cfg.tol_grad
    assert int(handed.steps.sum()) < int(plain.steps.sum())


def test_near_global_members_refine_instead_of_first_order_steps(problem) -> None:
    teacher, _, objective = problem
    theta0 = (teacher.theta + 1e-3).unsqueeze(0)  # below tol_global from the start
    cfg = TrainConfig(steps=300, refine_steps=1, tol_global=1e-3, certify_rounds=2, tol_zero=0.0)
    plain = train(objective, theta0, replace(cfg, certify_rounds=0))
    result = train(objective, theta0, cfg)
    assert int(result.rounds[0]) == 2
    # round 2 took no first-order step, and up to SETTLED_REFINE x refine_steps iterations
    assert int(result.steps[0]) == int(plain.steps[0])
    assert int(result.refine_steps[0]) - int(plain.refine_steps[0]) > 2 * cfg.refine_steps


def test_the_population_loss_measures_rounding_on_its_terms() -> None:
    teacher = make_teacher(d=2, width=3, activation="erf", incoming="gaussian", seed=2)
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    objective = student_objective(teacher, arch, None)
    silent = torch.zeros(1, arch.n_params, dtype=torch.float64)  # f = 0: loss = teacher term
    assert objective.loss_scale == pytest.approx(3 * float(objective.loss(silent)[0]), rel=1e-12)
    data = student_objective(teacher, arch, 50, seed=0)
    assert data.loss_scale == 0.0


def test_members_near_a_saddle_take_first_order_steps_and_settled_ones_do_not(problem) -> None:
    """Round 2 continues the first-order phase only for members with a clearly negative
    Hessian eigenvalue; a member in a basin (positive semidefinite Hessian) refines only."""
    teacher, arch, objective = problem
    near_saddle = torch.full((arch.n_params,), 1e-3, dtype=torch.float64)  # next to theta = 0
    in_basin = teacher.theta + 1e-3
    theta0 = torch.stack([near_saddle, in_basin])
    eigs = torch.linalg.eigvalsh(objective.hessian(theta0))
    assert float(eigs[0, 0]) < -1e-3 * float(eigs[0, -1]) and float(eigs[1, 0]) > 0
    cfg = TrainConfig(steps=50, refine_steps=1, certify_rounds=2, tol_zero=0.0, tol_global=1e-30)
    result = train(objective, theta0, cfg)
    assert result.rounds.tolist() == [2, 2]
    # phase 1 took 50 steps each; round 2 another 50 for the member near the saddle only
    assert result.steps.tolist() == [100, 50]
    assert int(result.refine_steps[1]) > int(result.refine_steps[0])
