"""Oracle tests of the trainer: ensemble members are independent networks, Adam is torch's Adam,
the Newton refinement reaches machine-precision critical points, and per-member stopping freezes
members at the state they stopped in."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from escapelab.nets.mlp import Architecture
from escapelab.optim.full_batch import TrainConfig, train
from escapelab.optim.refine import newton_direction
from escapelab.optim.steppers import Adam, GradientDescent, make_stepper
from escapelab.problems.objective import DataObjective
from escapelab.problems.teacher import make_teacher, student_objective

pytestmark = pytest.mark.usefixtures("single_thread")


def _data_objective(arch: Architecture, n: int, seed: int, y_scale: float = 1.0) -> DataObjective:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, arch.d_in, generator=gen, dtype=torch.float64)
    y = y_scale * torch.randn(n, arch.d_out, generator=gen, dtype=torch.float64)
    return DataObjective(arch, x, y)


@pytest.mark.parametrize(
    "arch",
    [
        Architecture(4, (5,), 1, "tanh", bias=True, output_bias=False),
        Architecture(4, (4, 3), 2, "softplus", bias=True, output_bias=True),
    ],
    ids=["shallow-tanh", "deep-softplus"],
)
def test_ensemble_member_trains_like_the_network_alone(arch: Architecture) -> None:
    obj = _data_objective(arch, 120, seed=0)
    cfg = TrainConfig(optimizer="adam", lr=0.01, steps=300, refine_steps=0)
    theta0 = arch.init(6, seed=2)
    ens = train(obj, theta0, cfg)
    alone = train(obj, arch.init(1, seed=2, first_member=3), cfg)
    assert ens.status == ["budget"] * 6 and alone.status == ["budget"]
    assert int(ens.steps[3]) == int(alone.steps[0]) == 300
    # the member really moved, and landed where it lands alone
    assert (ens.theta[3] - theta0[3]).norm() > 0.5
    torch.testing.assert_close(ens.theta[3], alone.theta[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(ens.loss[3], alone.loss[0], rtol=1e-12, atol=0)
    # members are different networks: they do not end at the same point
    assert (ens.theta[3] - ens.theta[4]).norm() > 1e-2


def _module_from_theta(arch: Architecture, theta: torch.Tensor) -> nn.Sequential:
    layers = arch.unflatten(theta)
    (i1, o1, b1), (i2, o2, b2) = arch.layer_dims
    net = nn.Sequential(
        nn.Linear(i1, o1, bias=b1, dtype=torch.float64),
        nn.Tanh(),
        nn.Linear(i2, o2, bias=b2, dtype=torch.float64),
    )
    with torch.no_grad():
        net[0].weight.copy_(layers[0].weight)
        net[0].bias.copy_(layers[0].bias)
        net[2].weight.copy_(layers[1].weight)
        net[2].bias.copy_(layers[1].bias)
    return net


@pytest.mark.parametrize("foreach", [False, True])
def test_adam_matches_torch_optim_adam(foreach: bool) -> None:
    arch = Architecture(3, (4,), 1, "tanh", bias=True, output_bias=True)
    obj = _data_objective(arch, 64, seed=1)
    theta0 = arch.init(1, seed=5)
    betas, eps, lr = (0.85, 0.99), 1e-6, 0.02
    net = _module_from_theta(arch, theta0[0])
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas, eps=eps, foreach=foreach)
    for _ in range(50):
        opt.zero_grad()
        loss = 0.5 * (net(obj.x) - obj.y).square().sum() / obj.x.shape[0]
        loss.backward()
        opt.step()
    want = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert (want - theta0[0]).norm() > 0.3

    # the stepper on its own
    theta = theta0.clone()
    stepper = Adam(lr, betas, eps)
    for _ in range(50):
        stepper.step(theta, obj.loss_and_grad(theta)[1])
    assert stepper.t == 50
    torch.testing.assert_close(theta[0], want, rtol=0, atol=1e-12)

    # and through the trainer: steps=50 means 50 updates
    res = train(obj, theta0, TrainConfig(lr=lr, betas=betas, eps=eps, steps=50, refine_steps=0))
    torch.testing.assert_close(res.theta[0], want, rtol=0, atol=1e-12)
    with torch.no_grad():
        final = 0.5 * (net(obj.x) - obj.y).square().sum() / obj.x.shape[0]
    assert res.loss[0].item() == pytest.approx(final.item(), rel=1e-12)


def test_gradient_descent_is_plain_gradient_descent() -> None:
    arch = Architecture(2, (3,), 1, "erf", bias=False)
    obj = _data_objective(arch, 40, seed=2)
    theta0 = arch.init(3, seed=1)
    theta = theta0.clone()
    for _ in range(20):
        theta -= 0.1 * obj.loss_and_grad(theta)[1]
    res = train(obj, theta0, TrainConfig(optimizer="gd", lr=0.1, steps=20, refine_steps=0))
    torch.testing.assert_close(res.theta, theta, rtol=0, atol=1e-14)
    assert isinstance(make_stepper("gd", 0.1, (0.9, 0.999), 1e-8), GradientDescent)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        make_stepper("sgd", 0.1, (0.9, 0.999), 1e-8)


def test_adam_keep_drops_rows_without_changing_the_others() -> None:
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(4, 5, generator=gen, dtype=torch.float64) for _ in range(6)]
    full, part = Adam(0.05), Adam(0.05)
    theta_full = torch.zeros(4, 5, dtype=torch.float64)
    theta_part = theta_full.clone()
    for k, g in enumerate(grads):
        full.step(theta_full, g)
        if k == 2:
            rows = torch.tensor([0, 2])
            part.keep(rows)
            theta_part = theta_part[rows]
        part.step(theta_part, g if k < 2 else g[[0, 2]])
        if k == 1:
            part.keep(torch.arange(4))  # keeping everyone is a no-op
    torch.testing.assert_close(theta_part, theta_full[[0, 2]], rtol=0, atol=0)


def test_newton_direction_is_saddle_free_damped_newton() -> None:
    # H = diag(2, -1, 0.5): delta_k = -g_k / (|lambda_k| + nu * 2)
    vals = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)
    vecs = torch.eye(3, dtype=torch.float64).unsqueeze(0)
    grad = torch.tensor([[1.0, 1.0, -2.0]], dtype=torch.float64)
    nu = torch.tensor([0.25], dtype=torch.float64)
    got = newton_direction(grad, vals, vecs, nu)
    want = torch.tensor([[-1.0 / 2.5, -1.0 / 1.5, 2.0 / 1.0]], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0)
    # a descent direction even though H is indefinite
    assert (got * grad).sum() < 0


@pytest.mark.parametrize(("activation", "bias"), [("erf", False), ("tanh", True)])
def test_newton_refinement_reaches_machine_precision_critical_point(
    activation: str, bias: bool
) -> None:
    teacher = make_teacher(4, 3, activation=activation, bias=bias, seed=3)
    obj = student_objective(teacher, teacher.arch, 500, seed=1)
    gen = torch.Generator().manual_seed(0)
    noise = 1e-2 * torch.randn(3, teacher.theta.numel(), generator=gen, dtype=torch.float64)
    theta0 = teacher.theta + noise
    res = train(obj, theta0, TrainConfig(steps=0, refine_steps=50, tol_global=0.0))
    assert res.status == ["converged"] * 3
    assert torch.all(res.grad_norm < 1e-10)
    assert torch.all(res.refine_steps >= 1) and torch.all(res.refine_steps <= 50)
    assert torch.all(res.steps == 0)
    # the recorded numbers are those of the returned parameters
    loss, grad = obj.loss_and_grad(res.theta)
    torch.testing.assert_close(res.loss, loss, rtol=0, atol=0)
    torch.testing.assert_close(res.grad_norm, grad.norm(dim=1), rtol=0, atol=0)
    # N = 500 >> P: the zero-loss point near the start is the teacher itself
    assert torch.all(res.loss < 1e-16)
    assert torch.all((res.theta - teacher.theta).norm(dim=1) < 1e-7)


def test_refinement_stops_members_individually() -> None:
    teacher = make_teacher(4, 3, activation="tanh", bias=True, seed=3)
    obj = student_objective(teacher, teacher.arch, 500, seed=1)
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([[1e-1], [1e-2], [1e-4]], dtype=torch.float64)
    noise = torch.randn(3, teacher.theta.numel(), generator=gen, dtype=torch.float64)
    theta0 = teacher.theta + scales * noise
    before = theta0.clone()
    res = train(obj, theta0, TrainConfig(steps=0, refine_steps=50, tol_global=0.0))
    assert torch.equal(theta0, before)  # the caller's tensor is not touched
    assert res.status == ["converged"] * 3
    assert len(set(res.refine_steps.tolist())) == 3  # each stopped at its own iteration
    for i in range(3):
        k = int(res.refine_steps[i])
        cfg = TrainConfig(steps=0, refine_steps=k, tol_global=0.0, tol_grad=0.0)
        alone = train(obj, theta0[i : i + 1], cfg)
        assert alone.status == ["budget"] and int(alone.refine_steps[0]) == k
        torch.testing.assert_close(res.theta[i], alone.theta[0], rtol=0, atol=1e-12)


def test_diverged_members_are_recorded_and_the_others_keep_training() -> None:
    arch = Architecture(3, (4,), 1, "tanh", bias=True)
    obj = _data_objective(arch, 64, seed=0)
    theta0 = arch.init(4, seed=5, scheme="normal")
    theta0[1] *= 1e4 / theta0[1].norm()  # norm 1e4 > max_norm = 1e3
    theta0[2, 5] = float("nan")
    cfg = TrainConfig(lr=0.02, steps=40, refine_steps=3, max_norm=1e3)
    res = train(obj, theta0, cfg)
    assert res.status[1] == "diverged" and res.status[2] == "diverged"
    assert res.status[0] in ("budget", "converged") and res.status[3] in ("budget", "converged")
    assert res.steps.tolist()[1:3] == [0, 0]
    assert res.refine_steps.tolist()[1:3] == [0, 0]
    # frozen at the moment they stopped: the initial values
    assert torch.equal(res.theta[1], theta0[1])
    assert torch.equal(res.theta[2].isnan(), theta0[2].isnan())
    assert torch.equal(res.theta[2].nan_to_num(), theta0[2].nan_to_num())
    assert math.isnan(res.loss[2].item()) and math.isfinite(res.loss[1].item())
    assert res.theta[1].norm().item() > cfg.max_norm
    # the healthy members trained exactly as they train without the broken ones
    healthy = train(obj, theta0[[0, 3]], cfg)
    assert [res.status[0], res.status[3]] == healthy.status
    torch.testing.assert_close(res.theta[[0, 3]], healthy.theta, rtol=0, atol=1e-12)
    assert torch.all((res.theta[[0, 3]] - theta0[[0, 3]]).norm(dim=1) > 0.1)
    assert torch.all(res.refine_steps[[0, 3]] == healthy.refine_steps)


def _frozen_at_stop(obj: DataObjective, theta0: torch.Tensor, cfg: TrainConfig) -> None:
    """Members stopping mid-training keep the parameters of the step they stopped at."""
    res = train(obj, theta0, cfg)
    stopped = [i for i, s in enumerate(res.status) if s != "budget"]
    stop_steps = {int(res.steps[i]) for i in stopped}
    assert len(stopped) >= 3 and len(stop_steps) >= 3  # several members, at different steps
    assert 0 not in stop_steps and "budget" in res.status  # mid-training, and not everyone
    never_stop = TrainConfig(
        lr=cfg.lr, steps=0, refine_steps=0, tol_grad=0.0, tol_global=0.0, max_norm=math.inf
    )
    for i in range(theta0.shape[0]):
        k = int(res.steps[i])
        # the same member alone, trained for exactly k updates with stopping switched off
        alone = train(obj, theta0[i : i + 1], replace(never_stop, steps=k))
        torch.testing.assert_close(res.theta[i], alone.theta[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(res.loss[i], alone.loss[0], rtol=1e-12, atol=0)
        if i in stopped and k > 0:
            # and it would not have stopped one step earlier
            before = train(obj, theta0[i : i + 1], replace(never_stop, steps=k - 1))
            if res.status[i] == "converged":
                assert res.grad_norm[i] <= cfg.tol_grad < before.grad_norm[0]
            else:
                assert before.theta[0].norm() <= cfg.max_norm < res.theta[i].norm()


def test_converged_members_are_frozen_at_the_step_they_stopped() -> None:
    arch = Architecture(3, (4,), 1, "tanh", bias=True)
    obj = _data_objective(arch, 64, seed=0, y_scale=2.0)
    theta0 = arch.init(6, seed=5, scheme="normal")
    _frozen_at_stop(obj, theta0, TrainConfig(lr=0.02, steps=200, refine_steps=0, tol_grad=0.1))


def test_members_past_max_norm_are_frozen_at_the_step_they_crossed() -> None:
    arch = Architecture(3, (4,), 1, "tanh", bias=True)
    obj = _data_objective(arch, 64, seed=0, y_scale=2.0)
    theta0 = arch.init(6, seed=5, scheme="normal")
    cfg = TrainConfig(lr=0.02, steps=200, refine_steps=0, max_norm=6.0)
    _frozen_at_stop(obj, theta0, cfg)
    res = train(obj, theta0, cfg)
    assert set(res.status) == {"diverged", "budget"}


def test_global_members_stop_at_once_and_history_is_recorded() -> None:
    teacher = make_teacher(3, 2, activation="tanh", bias=True, seed=0)
    obj = student_objective(teacher, teacher.arch, 50)
    theta0 = teacher.arch.init(3, seed=1)
    theta0[1] = teacher.theta  # already at a zero-loss point
    res = train(obj, theta0, TrainConfig(lr=0.01, steps=25, refine_steps=0, record_every=10))
    assert res.status == ["budget", "global", "budget"]
    assert res.steps.tolist() == [25, 0, 25]
    assert torch.equal(res.theta[1], teacher.theta)
    assert res.history_step == [0, 10, 20]
    assert res.history_loss.shape == res.history_norm.shape == (3, 3)
    torch.testing.assert_close(res.history_norm[:, 0], theta0.norm(dim=1), rtol=0, atol=0)
    torch.testing.assert_close(res.history_loss[:, 0], obj.loss(theta0), rtol=0, atol=0)
    # a member that stopped has no later history
    assert torch.isnan(res.history_loss[1, 1:]).all() and torch.isfinite(res.history_loss[0]).all()
