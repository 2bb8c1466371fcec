"""Oracle tests of the endpoint classification on planted points whose nature is known exactly."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from scipy.optimize import minimize_scalar

from escapelab.landscape.channels import linearizing_unit, merging_pair
from escapelab.landscape.classify import ClassifyConfig, classify
from escapelab.nets.mlp import Architecture
from escapelab.optim.full_batch import TrainConfig, TrainResult, train
from escapelab.problems.objective import Objective
from escapelab.problems.teacher import make_teacher, student_objective
from hand_results import hand_result

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("n_samples", [None, 400], ids=["population", "data"])
def test_teacher_itself_is_a_global_minimum(n_samples: int | None) -> None:
    teacher = make_teacher(4, 3, incoming="gaussian", outgoing="signs", seed=2)
    obj = student_objective(teacher, teacher.arch, n_samples)
    theta = teacher.theta.unsqueeze(0)
    for status in ("global", "converged"):
        (end,) = classify(obj, hand_result(obj, theta, [status]))
        assert end.kind == "global_min"
        assert end.loss < 1e-14 and end.grad_norm < 1e-14
        # zero residual: the Hessian is the Gauss-Newton matrix J^T J, positive semidefinite
        assert end.eig_min >= -1e-12 * end.eig_max
        assert end.eig_max > 1e-2
        assert end.n_negative == 0
        assert end.param_norm == pytest.approx(teacher.theta.norm().item(), rel=1e-15)
        assert end.status == status and end.steps == 100 and end.refine_steps == 0


def test_origin_of_population_erf_network_is_an_exact_saddle() -> None:
    # teacher: orthonormal t1, t2 with output weights 1, 1. At theta = 0 every term of the gradient
    # carries a factor a = 0 or erf(0) = 0, and the only second derivatives left are
    # d2L / (da_j dw_j) = -(2/pi) sum_i t_i / sqrt(1 + |t_i|^2) = -(2/pi) (t1 + t2) / sqrt 2 = b,
    # so each unit contributes the eigenvalues +-|b| = +-2/pi and the rest are zero.
    width = 2
    teacher = make_teacher(3, 2, incoming="orthonormal", outgoing="ones", seed=4)
    student = Architecture(3, (width,), 1, "erf", bias=False)
    obj = student_objective(teacher, student, None)
    theta = torch.zeros(1, student.n_params, dtype=torch.float64)
    _, grad = obj.loss_and_grad(theta)
    assert torch.all(grad == 0)
    eigs = torch.linalg.eigvalsh(obj.hessian(theta)[0])
    two_over_pi = 2.0 / math.pi
    want = torch.tensor(
        [-two_over_pi] * width + [0.0] * (student.n_params - 2 * width) + [two_over_pi] * width,
        dtype=torch.float64,
    )
    torch.testing.assert_close(eigs, want, rtol=0, atol=1e-14)
    (end,) = classify(obj, hand_result(obj, theta, ["converged"]))
    assert end.kind == "saddle"
    assert end.eig_min == pytest.approx(-two_over_pi, rel=1e-13)
    assert end.eig_max == pytest.approx(two_over_pi, rel=1e-13)
    assert end.n_negative == width
    assert end.grad_norm == 0.0
    # L(0) = 1/2 E f*^2 = 1/2 * 2 * (2/pi) asin(1/2) = 1/3
    assert end.loss == pytest.approx(1.0 / 3.0, rel=1e-14)


@pytest.mark.parametrize("activation", ["erf", "tanh"])
def test_origin_of_sampled_odd_network_is_an_exact_saddle(activation: str) -> None:
    # On a sample: d2L / (da_j dw_j) = -sigma'(0) mean_n(y_n x_n) = b, eigenvalues +-|b| per unit.
    width = 3
    teacher = make_teacher(4, 2, activation="erf", incoming="gaussian", outgoing="gaussian", seed=1)
    student = Architecture(4, (width,), 1, activation, bias=False)
    obj = student_objective(teacher, student, 300, seed=3)
    theta = torch.zeros(1, student.n_params, dtype=torch.float64)
    _, grad = obj.loss_and_grad(theta)
    assert torch.all(grad == 0)
    slope0 = math.sqrt(2.0 / math.pi) if activation == "erf" else 1.0
    b_norm = (slope0 * (obj.y * obj.x).mean(0)).norm().item()
    assert b_norm > 0.05  # the teacher's output has a clear linear component
    eigs = torch.linalg.eigvalsh(obj.hessian(theta)[0])
    assert eigs[0].item() == pytest.approx(-b_norm, rel=1e-12)
    assert eigs[-1].item() == pytest.approx(b_norm, rel=1e-12)
    torch.testing.assert_close(eigs[:width], torch.full((width,), -b_norm, dtype=torch.float64))
    (end,) = classify(obj, hand_result(obj, theta, ["converged"]))
    assert end.kind == "saddle"
    assert end.n_negative == width
    assert end.eig_min == pytest.approx(-b_norm, rel=1e-12)


def test_width_one_student_on_width_two_teacher_is_a_bad_local_minimum() -> None:
    # teacher: orthonormal t1, t2, output weights 1, 1; student: one erf unit. By symmetry its best
    # point is w = c (t1 + t2), where the loss after eliminating a is 1/3 - 2 K(w,t)^2 / K(w,w).
    teacher = make_teacher(3, 2, incoming="orthonormal", outgoing="ones", seed=0)
    t = teacher.arch.unflatten(teacher.theta)[0].weight
    student = Architecture(3, (1,), 1, "erf", bias=False)
    obj = student_objective(teacher, student, None)
    res = train(obj, student.init(3, seed=0), TrainConfig(steps=200, lr=0.05, refine_steps=50))
    assert res.status == ["converged"] * 3
    assert torch.all(res.grad_norm <= 1e-10)

    def k(uv: float, uu: float, vv: float) -> float:
        return (2.0 / math.pi) * math.asin(uv / math.sqrt((1.0 + uu) * (1.0 + vv)))

    def reduced(c: float) -> float:
        return 1.0 / 3.0 - 2.0 * k(c, 2 * c * c, 1.0) ** 2 / k(2 * c * c, 2 * c * c, 2 * c * c)

    best = minimize_scalar(reduced, bounds=(0.01, 5.0), method="bounded", options={"xatol": 1e-12})
    # the minimiser is c = 1/sqrt 6, where K(w,t) = K(w,w) = (2/pi) asin(1/4) and a = 2
    assert best.x == pytest.approx(1.0 / math.sqrt(6.0), abs=1e-6)
    l_star = 1.0 / 3.0 - (4.0 / math.pi) * math.asin(0.25)
    assert best.fun == pytest.approx(l_star, abs=1e-14)
    w_star = (t[0] + t[1]) / math.sqrt(6.0)
    for e in range(3):
        sign = 1.0 if res.theta[e, 3] > 0 else -1.0  # (w, a) and (-w, -a) are the same network
        torch.testing.assert_close(res.theta[e, :3], sign * w_star, rtol=0, atol=1e-7)
        assert res.theta[e, 3].item() == pytest.approx(2.0 * sign, abs=1e-7)
        assert res.loss[e].item() == pytest.approx(l_star, abs=1e-13)

    cfg = ClassifyConfig()
    ends = classify(obj, res, cfg)
    for end in ends:
        assert end.kind == "local_min"
        assert end.loss > cfg.tol_global
        assert end.eig_min >= -cfg.tol_eig * end.eig_max
        assert end.eig_min > 1e-3  # in fact strictly positive definite: an isolated minimum
        assert end.n_negative == 0


def test_non_finite_and_unfinished_endpoints() -> None:
    teacher = make_teacher(3, 2, seed=0)
    student = Architecture(3, (2,), 1, "erf", bias=False)
    obj = student_objective(teacher, student, None)
    theta = student.init(3, seed=1)
    res = hand_result(obj, theta, ["budget", "diverged", "budget"])
    res.theta = res.theta.clone()
    res.theta[2, 0] = float("nan")
    res.loss[2] = float("nan")
    ends = classify(obj, res)
    assert [e.kind for e in ends] == ["not_converged", "diverged", "diverged"]
    assert math.isnan(ends[2].eig_min) and math.isfinite(ends[0].eig_min)


def _planted(
    arch: Architecture, incoming: list[list[float]], outgoing: list[float]
) -> torch.Tensor:
    w = torch.tensor(incoming, dtype=torch.float64)
    a = torch.tensor([outgoing], dtype=torch.float64)
    theta = torch.zeros(arch.n_params, dtype=torch.float64)
    layers = arch.unflatten(theta)
    layers[0].weight.copy_(w)
    layers[1].weight.copy_(a)
    return theta


def test_merging_pair_detects_opposite_large_outgoing_weights() -> None:
    arch = Architecture(3, (3,), 1, "erf", bias=False)
    u, v = [0.6, -0.8, 0.0], [0.0, 0.3, 1.0]
    assert merging_pair(arch, _planted(arch, [u, u, v], [10.0, -10.0, 1.0]), 1e-3, 3.0)
    assert not merging_pair(arch, _planted(arch, [u, u, v], [10.0, 10.0, 1.0]), 1e-3, 3.0)
    # nearly parallel still counts; outgoing weights below out_min do not
    u2 = [0.6, -0.8, 0.01]
    assert merging_pair(arch, _planted(arch, [u, u2, v], [10.0, -10.0, 1.0]), 1e-3, 3.0)
    assert not merging_pair(arch, _planted(arch, [u, v, u], [2.0, 5.0, -2.0]), 1e-3, 3.0)
    # the pair need not be adjacent
    assert merging_pair(arch, _planted(arch, [u, v, u], [10.0, 1.0, -10.0]), 1e-3, 3.0)
    # far from parallel: no
    assert not merging_pair(arch, _planted(arch, [u, v, v], [10.0, -10.0, 1.0]), 1e-3, 3.0)


def test_odd_activations_also_merge_antiparallel_pairs() -> None:
    """erf is odd: (w, a) and (-w, a) is the pair (w, a), (w, -a), the same channel."""
    u, v = [0.6, -0.8, 0.0], [0.0, 0.3, 1.0]
    minus_u = [-0.6, 0.8, 0.0]
    erf = Architecture(3, (3,), 1, "erf", bias=False)
    assert merging_pair(erf, _planted(erf, [u, minus_u, v], [10.0, 10.0, 1.0]), 1e-3, 3.0)
    assert not merging_pair(erf, _planted(erf, [u, minus_u, v], [10.0, -10.0, 1.0]), 1e-3, 3.0)
    # softplus is not odd: an antiparallel pair is two different functions
    soft = Architecture(3, (3,), 1, "softplus", bias=False)
    assert not merging_pair(soft, _planted(soft, [u, minus_u, v], [10.0, 10.0, 1.0]), 1e-3, 3.0)


def test_merging_pair_with_biases_and_deeper_layers() -> None:
    arch = Architecture(2, (2, 2), 1, "tanh", bias=True)
    theta = torch.zeros(arch.n_params, dtype=torch.float64)
    layers = arch.unflatten(theta)
    layers[0].weight.copy_(torch.tensor([[1.0, 2.0], [1.0, 2.0]]))
    layers[0].bias.copy_(torch.tensor([0.5, 0.5]))
    layers[1].weight.copy_(torch.tensor([[8.0, -8.0], [4.0, -4.0]]))  # columns: outgoing vectors
    layers[2].weight.copy_(torch.tensor([[1.0, 0.5]]))
    assert merging_pair(arch, theta, 1e-3, 3.0)
    layers[0].bias.copy_(torch.tensor([0.5, -3.0]))  # same weights, different biases: not merging
    assert not merging_pair(arch, theta, 1e-3, 3.0)
    layers[0].bias.copy_(torch.tensor([0.5, 0.5]))
    layers[1].weight.copy_(torch.tensor([[8.0, 8.0], [4.0, 4.0]]))
    assert not merging_pair(arch, theta, 1e-3, 3.0)
    # a merging pair in the second hidden layer, seen through the output weights
    layers[1].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    layers[1].bias.copy_(torch.tensor([0.2, 0.2]))
    layers[2].weight.copy_(torch.tensor([[10.0, -10.0]]))
    assert merging_pair(arch, theta, 1e-3, 3.0)


def test_flat_channel_needs_pair_growth_and_plateau() -> None:
    teacher = make_teacher(3, 2, seed=0)
    student = Architecture(3, (3,), 1, "erf", bias=False)
    obj = student_objective(teacher, student, None)
    u, v = [0.6, -0.8, 0.0], [0.0, 0.3, 1.0]
    theta = torch.stack(
        [
            _planted(student, [u, u, v], [10.0, -10.0, 1.0]),
            _planted(student, [u, u, v], [10.0, 10.0, 1.0]),
            _planted(student, [u, u, v], [10.0, -10.0, 1.0]),
        ]
    )
    growing = torch.linspace(5.0, 20.0, 8, dtype=torch.float64)
    flat_loss = torch.full((8,), 0.3, dtype=torch.float64)
    norms = torch.stack([growing, growing, torch.full((8,), 20.0, dtype=torch.float64)])
    losses = flat_loss.expand(3, 8).clone()
    res = hand_result(obj, theta, ["budget"] * 3, history_norm=norms, history_loss=losses)
    kinds = [e.kind for e in classify(obj, res)]
    # planted pair + growing norm + flat loss; no opposite pair; no growth
    assert kinds == ["flat_channel", "not_converged", "not_converged"]


def test_result_without_history_is_classified_without_error() -> None:
    # TrainResult declares history_loss / history_norm optional (default None). With no recorded
    # history there is no evidence of a growing norm, so a planted pair alone is not a channel.
    teacher = make_teacher(3, 2, seed=0)
    student = Architecture(3, (3,), 1, "erf", bias=False)
    obj = student_objective(teacher, student, None)
    u, v = [0.6, -0.8, 0.0], [0.0, 0.3, 1.0]
    theta = _planted(student, [u, u, v], [10.0, -10.0, 1.0]).unsqueeze(0)
    res = hand_result(obj, theta, ["budget"])
    assert res.history_norm is None and res.history_loss is None
    (end,) = classify(obj, res)
    assert end.kind == "not_converged"


def _single_pair_history(
    steps: list[int], loss: list[float], norm: list[float]
) -> tuple[Objective, TrainResult]:
    """A planted merging pair out of budget, with the given history: (objective, result)."""
    teacher = make_teacher(3, 2, seed=0)
    student = Architecture(3, (3,), 1, "erf", bias=False)
    obj = student_objective(teacher, student, None)
    u, v = [0.6, -0.8, 0.0], [0.0, 0.3, 1.0]
    theta = _planted(student, [u, u, v], [10.0, -10.0, 1.0]).unsqueeze(0)
    res = replace(
        hand_result(obj, theta, ["budget"]),
        history_step=steps,
        history_loss=torch.tensor([loss], dtype=torch.float64),
        history_norm=torch.tensor([norm], dtype=torch.float64),
    )
    return obj, res


def test_channel_reached_late_is_judged_on_the_late_steps() -> None:
    # the history of a certified run: dense records of phase 1 (the loss still falling), then
    # one record per certification round of thousands of steps (loss flat, norm growing). By
    # record count the second half is mostly phase 1, where the loss fell by 40 %; by steps it
    # is the rounds, where the channel shows.
    steps = [*range(0, 4001, 500), 8000, 12000, 16000, 20000]
    loss = [1.0, 0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45, 0.40, 0.3830, 0.3829, 0.3829, 0.3828]
    norm = [2.0, 3.0, 4.0, 4.5, 4.6, 4.62, 4.64, 4.65, 4.66, 11.0, 19.5, 29.3, 33.7]
    obj, res = _single_pair_history(steps, loss, norm)
    (end,) = classify(obj, res)
    assert end.kind == "flat_channel"
    # the same records spaced evenly in steps: the loss fell 40 % over the second half
    (end,) = classify(obj, replace(res, history_step=list(range(0, 13 * 500, 500))))
    assert end.kind == "not_converged"


def test_a_channel_travelled_by_newton_rounds_is_judged_on_the_rounds() -> None:
    # rounds of Newton iterations alone take no first-order steps: every round's record sits at
    # step 4000, so the second half in steps is the end of phase 1, where the loss still fell
    # 15 %; over the rounds after the first the norm grew tenfold and the loss held
    steps = [*range(0, 4001, 500), 4000, 4000, 4000, 4000]
    loss = [1.0, 0.9, 0.8, 0.6, 0.4, 0.3, 0.25, 0.22, 0.2025, 0.1740, 0.1719, 0.1719, 0.1719]
    norm = [2.0, 3.0, 3.5, 3.7, 3.8, 3.85, 3.9, 3.92, 3.95, 8.9, 103.0, 103.0, 103.0]
    obj, res = _single_pair_history(steps, loss, norm)
    assert classify(obj, res)[0].kind == "not_converged"  # no certification rounds marked
    (end,) = classify(obj, replace(res, history_rounds_from=9))
    assert end.kind == "flat_channel"
    # from the phase-1 endpoint on (rounds marked one column early) the loss fell 15 %: no
    assert classify(obj, replace(res, history_rounds_from=8))[0].kind == "not_converged"


def test_a_unit_turning_linear_is_a_channel() -> None:
    # a narrower student's channel (minima-census, teacher 7 at m = 3): one erf unit with
    # incoming norm 0.018 and outgoing weight -18 stands for a linear term; only the growing
    # norm on a flat loss makes it a channel
    teacher = make_teacher(2, 4, incoming="gaussian", seed=7)
    student = Architecture(2, (3,), 1, "erf", bias=False)
    obj = student_objective(teacher, student, None)
    rows = [[0.17, 3.06], [-1.12, -0.98], [-0.0098, -0.0147]]
    linearizing = _planted(student, rows, [-0.81, 1.04, -18.0]).unsqueeze(0)
    ordinary = _planted(student, [*rows[:2], [0.5, -0.4]], [-0.81, 1.04, 2.0]).unsqueeze(0)
    theta = torch.cat([linearizing, ordinary])
    growing = torch.linspace(5.0, 20.0, 8, dtype=torch.float64).expand(2, 8)
    flat = torch.full((2, 8), 4.33e-4, dtype=torch.float64)
    res = hand_result(obj, theta, ["budget"] * 2, history_norm=growing, history_loss=flat)
    assert [e.kind for e in classify(obj, res)] == ["flat_channel", "not_converged"]
    assert linearizing_unit(student, linearizing[0], 1e-2, 3.0)
    assert not linearizing_unit(student, ordinary[0], 1e-2, 3.0)
    relu = Architecture(2, (3,), 1, "relu", bias=False)  # no linear limit at w = 0
    assert not linearizing_unit(relu, linearizing[0], 1e-2, 3.0)
