"""One hook mechanism for both trainers: when hooks run, what they see, and snapshots that equal
shorter runs."""

from __future__ import annotations

import pytest
import torch

from escapelab.data.teacher_student import teacher_student_data
from escapelab.nets.classifiers import MLP
from escapelab.nets.mlp import Architecture
from escapelab.nets.stacked import StackedModel
from escapelab.optim.full_batch import TrainConfig, train
from escapelab.optim.hooks import Snapshots, StepState, at, every
from escapelab.optim.minibatch import FitConfig, fit
from escapelab.problems.teacher import make_teacher, student_objective

pytestmark = pytest.mark.usefixtures("single_thread")


def test_every_and_at_choose_the_steps() -> None:
    seen: list[int] = []
    hooks = [every(3, lambda s: seen.append(s.step)), at([1, 7], lambda s: seen.append(-s.step))]
    for step in range(9):
        for hook in hooks:
            hook(StepState(step, torch.zeros(1, 1), torch.arange(1)))
    assert seen == [0, -1, 3, 6, -7]
    with pytest.raises(ValueError, match="n must be >= 1"):
        every(0, print)


def test_full_batch_hooks_see_the_active_members_and_snapshots_equal_shorter_runs() -> None:
    teacher = make_teacher(d=3, width=2, activation="tanh", incoming="orthonormal", seed=0)
    arch = Architecture(3, (2,), 1, "tanh", bias=False)
    objective = student_objective(teacher, arch, 200, seed=0)
    theta0 = arch.init(4, seed=5)
    theta0[2] = teacher.theta  # member 2 starts at the global minimum and stops at step 0
    snaps = Snapshots([0, 5, 20])
    members: dict[int, list[int]] = {}
    losses: list[torch.Tensor] = []
    cfg = TrainConfig(steps=20, refine_steps=0, tol_global=1e-20)
    record = every(5, lambda s: members.__setitem__(s.step, s.members.tolist()))
    result = train(
        objective, theta0, cfg, hooks=[snaps, record, at([0], lambda s: losses.append(s.loss))]
    )
    assert result.status[2] == "global" and int(result.steps[2]) == 0
    assert members == {0: [0, 1, 2, 3], 5: [0, 1, 3], 10: [0, 1, 3], 15: [0, 1, 3], 20: [0, 1, 3]}
    assert torch.equal(snaps.taken[0], theta0) and snaps.rows[5].tolist() == [0, 1, 3]
    assert torch.allclose(losses[0], objective.loss(theta0), rtol=1e-12)
    short = train(objective, theta0[[0, 1, 3]], TrainConfig(steps=5, refine_steps=0))
    assert torch.equal(snaps.taken[5], short.theta)
    assert torch.equal(snaps.taken[20], result.theta[[0, 1, 3]])


def test_minibatch_hooks_see_named_weights_and_its_snapshots_are_a_hook() -> None:
    teacher = make_teacher(d=3, width=2, activation="tanh", incoming="orthonormal", seed=0)
    data = teacher_student_data(teacher, n_train=200, n_test=50)
    model = StackedModel(lambda: MLP((3,), 1, hidden=(4,), activation="tanh"))
    params = model.init([0, 1])
    cfg = FitConfig(steps=30, batch_size=20, eval_every=10)
    mine = Snapshots([10, 30])
    norms: list[tuple[int, float]] = []
    watch = every(
        15, lambda s: norms.append((s.step, float(s.weights["net.0.weight"].detach().norm())))
    )
    result = fit(model, params, data, cfg, [3, 4], snapshot_steps=[10], hooks=[mine, watch])
    assert [step for step, _ in norms] == [0, 15, 30]
    assert norms[0][1] == pytest.approx(float(params["net.0.weight"].norm()), rel=1e-6)
    assert set(result.snapshots) == {10}
    assert all(torch.equal(result.snapshots[10][n], mine.taken[10][n]) for n in params)
    assert all(torch.equal(result.params[n], mine.taken[30][n]) for n in params)
    assert mine.rows[10].tolist() == [0, 1]
