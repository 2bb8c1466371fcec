"""Oracle tests of the population losses beyond erf: every kernel against Monte Carlo, whole losses
against large samples, derivatives against finite differences, the quadrature's accuracy claim,
relu's collinear points, and the refusals."""

from __future__ import annotations

import math

import pytest
import torch

from escapelab.landscape.splitting import splitting_matrix
from escapelab.nets.activations import get_activation
from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import DataObjective
from escapelab.problems.population import (
    DEFAULT_ORDER,
    DEFAULT_ORDER_MAX_NORM,
    DEFAULT_TOL,
    PopulationObjective,
    check_quadrature_order,
    erf_kernel,
    kernel_taylor,
    min_incoming_angle,
    population_kernel,
    quadrature_error,
)
from escapelab.problems.teacher import make_teacher, student_objective

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


def _rows(seed: int, bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, ...]:
    """Rows w (3, 3) and v (4, 3): random, nearly collinear, opposite, and one of norm 3."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(3, 3, generator=gen, dtype=F64)
    w[2] *= 3.0 / w[2].norm()
    v = torch.stack(
        [
            1.3 * w[0] + 1e-3 * torch.randn(3, generator=gen, dtype=F64),  # nearly collinear
            -0.8 * w[1],  # opposite
            torch.randn(3, generator=gen, dtype=F64),
            w[2].clone(),  # identical
        ]
    )
    if not bias:
        return w, v, None, None
    return w, v, torch.randn(3, generator=gen, dtype=F64), torch.randn(4, generator=gen, dtype=F64)


def _mc_kernel(act: str, w, v, b_w, b_v, n: int = 1_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample mean of sigma(w.x + b_w) sigma(v.x + b_v) over n Gaussian x and its standard error."""
    fn, chunk = get_activation(act).fn, 200_000
    gen = torch.Generator().manual_seed(99)
    total = torch.zeros(w.shape[0], v.shape[0], dtype=F64)
    total_sq = torch.zeros_like(total)
    for _ in range(n // chunk):
        x = torch.randn(chunk, w.shape[1], generator=gen, dtype=F64)
        hu, hv = x @ w.t(), x @ v.t()
        if b_w is not None:
            hu, hv = hu + b_w, hv + b_v
        prod = fn(hu).unsqueeze(2) * fn(hv).unsqueeze(1)
        total += prod.sum(0)
        total_sq += prod.square().sum(0)
    mean = total / n
    return mean, ((total_sq / n - mean.square()) / (n - 1)).sqrt()


KERNEL_CASES = [
    ("relu", False),
    ("linear", False),
    ("linear", True),
    ("erf", False),
    ("tanh", False),
    ("tanh", True),
    ("sigmoid", True),
    ("softplus", True),
]


@pytest.mark.parametrize(("act", "bias"), KERNEL_CASES, ids=str)
def test_kernel_matches_monte_carlo(act: str, bias: bool) -> None:
    w, v, b_w, b_v = _rows(5, bias)
    exact = population_kernel(act, w, v, b_w, b_v)
    mean, stderr = _mc_kernel(act, w, v, b_w, b_v)
    # relu of opposite vectors: the product is 0 for every sample, so its error bar is 0 too
    z = (mean - exact).abs() / stderr.clamp_min(1e-12)
    assert z.max() < 5.0, (act, z.max())
    # the estimate is informative: its error bar is small against the kernel's scale
    assert stderr.max() < 2e-2 * exact.abs().max()


def _mc_loss(student: Architecture, theta, teacher, d: int, n: int = 1_000_000):
    """Mean of 1/2 |f(x) - f*(x)|^2 by a large-sample DataObjective, and the standard error."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(n, d, generator=gen, dtype=F64)
    y = teacher(x)
    mean = DataObjective(student, x, y).loss(theta)
    per_sample = 0.5 * (student.forward(theta, x) - y).square().sum(-1)  # (E, n)
    return mean, per_sample.std(1) / math.sqrt(n)


@pytest.mark.parametrize(
    ("act", "bias"), [("relu", False), ("linear", False), ("tanh", False), ("tanh", True)], ids=str
)
def test_population_loss_matches_a_large_sample(act: str, bias: bool) -> None:
    teacher = make_teacher(3, 2, act, "gaussian", "signs", bias=bias, seed=1, scale=1.5)
    student = Architecture(3, (3,), 1, act, bias=bias, output_bias=False)
    obj = student_objective(teacher, student, None)
    assert isinstance(obj, PopulationObjective)
    theta = student.init(2, seed=3, scheme="normal", scale=0.9)
    exact = obj.loss(theta)
    mean, stderr = _mc_loss(student, theta, teacher, 3)
    for e in range(2):
        assert stderr[e] < 1e-2 * exact[e]
        assert (mean[e] - exact[e]).abs() < 5.0 * stderr[e], (mean[e], exact[e], stderr[e])


def _fd_grad(obj, theta: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    eye = torch.eye(theta.shape[1], dtype=F64)
    return torch.stack([(obj.loss(t + h * eye) - obj.loss(t - h * eye)) / (2 * h) for t in theta])


def _fd_hessian(obj, theta: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """Central differences of the analytic gradient, one member at a time: (E, P, P)."""
    eye = torch.eye(theta.shape[1], dtype=F64)
    rows = []
    for t in theta:
        gp = obj.loss_and_grad(t + h * eye)[1]
        gm = obj.loss_and_grad(t - h * eye)[1]
        rows.append((gp - gm) / (2 * h))
    return torch.stack(rows)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    ("act", "bias"),
    [("relu", False), ("linear", True), ("tanh", True), ("sigmoid", False), ("softplus", True)],
    ids=str,
)
def test_gradient_and_hessian_match_finite_differences(act: str, bias: bool) -> None:
    teacher = make_teacher(3, 2, act, "gaussian", "gaussian", bias=bias, seed=2, scale=2.0)
    student = Architecture(3, (3,), 1, act, bias=bias, output_bias=False)
    obj = student_objective(teacher, student, None)
    theta = student.init(2, seed=6, scheme="normal", scale=0.8)
    assert float(obj.min_incoming_angle(theta).min()) > 0.05  # away from relu's collinear points
    losses, grad = obj.loss_and_grad(theta)
    torch.testing.assert_close(losses, obj.loss(theta), rtol=1e-14, atol=0)
    assert _rel(_fd_grad(obj, theta), grad) < 1e-8
    hess = obj.hessian(theta)
    assert torch.equal(hess, hess.transpose(1, 2))
    assert _rel(_fd_hessian(obj, theta), hess) < 1e-7
    # member chunking changes nothing, and member_loss (single member) agrees with the batch
    torch.testing.assert_close(obj.hessian(theta, member_chunk=1), hess, rtol=1e-12, atol=1e-14)
    assert float((torch.stack([obj.member_loss(t) for t in theta]) - losses).abs().max()) < 1e-14


def test_price_derivatives_match_the_erf_closed_form() -> None:
    """The quadrature's (a, b, c) gradient and Hessian (Price's theorem) against autograd of
    (2/pi) asin(c / sqrt((1 + a)(1 + b))), and the bias block against linear's c + mu nu."""
    feats = torch.tensor([[2.0, 1.5, 0.7, 0.0, 0.0], [4.0, 0.5, -1.4, 0.0, 0.0]], dtype=F64)

    def closed(q: torch.Tensor) -> torch.Tensor:
        return (2 / math.pi) * torch.asin(q[2] / torch.sqrt((1 + q[0]) * (1 + q[1])))

    g0, g1, g2 = kernel_taylor("erf", feats)
    for i in range(2):
        q = feats[i]
        assert abs(float(g0[i] - closed(q))) < 1e-14
        torch.testing.assert_close(g1[i, :3], torch.func.grad(closed)(q)[:3], rtol=0, atol=1e-13)
        ref = torch.func.hessian(closed)(q)[:3, :3]
        torch.testing.assert_close(g2[i, :3, :3], ref, rtol=0, atol=1e-13)
    lin = torch.tensor([[2.0, 1.5, 0.7, 0.3, -1.1]], dtype=F64)
    g0, g1, g2 = kernel_taylor("linear", lin)
    assert abs(float(g0[0]) - (0.7 + 0.3 * -1.1)) < 1e-13
    torch.testing.assert_close(
        g1[0], torch.tensor([0, 0, 1, -1.1, 0.3], dtype=F64), atol=1e-13, rtol=0
    )
    expected = torch.zeros(5, 5, dtype=F64)
    expected[3, 4] = expected[4, 3] = 1.0
    torch.testing.assert_close(g2[0], expected, atol=1e-13, rtol=0)


def test_quadrature_derivatives_match_finite_differences() -> None:
    """All 5 + 15 Taylor coefficients of the tanh kernel with means, by differences of G."""
    q = torch.tensor([[2.2, 1.4, -0.9, 0.4, -0.7]], dtype=F64)
    _, g1, g2 = kernel_taylor("tanh", q)
    h, eye = 1e-5, torch.eye(5, dtype=F64)
    fd1 = (kernel_taylor("tanh", q + h * eye, 0)[0] - kernel_taylor("tanh", q - h * eye, 0)[0]) / (
        2 * h
    )
    fd2 = (kernel_taylor("tanh", q + h * eye, 1)[1] - kernel_taylor("tanh", q - h * eye, 1)[1]) / (
        2 * h
    )
    torch.testing.assert_close(g1[0], fd1, rtol=0, atol=1e-9)
    torch.testing.assert_close(g2[0], fd2, rtol=0, atol=1e-9)


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus"])
def test_default_order_meets_its_stated_bound(act: str) -> None:
    """Relative error <= DEFAULT_TOL for incoming norms up to DEFAULT_ORDER_MAX_NORM, with
    collinear, opposite and orthogonal pairs, biases on, for the value and all derivatives."""
    s = DEFAULT_ORDER_MAX_NORM
    w = torch.tensor([[s, 0.0, 0.0], [0.0, s, 0.0], [0.6 * s, 0.0, 0.8 * s]], dtype=F64)
    v = torch.cat([w, -w[:1], 0.5 * w[1:2], torch.tensor([[0.3, -0.2, 0.1]], dtype=F64)])
    b_w, b_v = torch.tensor([0.0, 1.0, -2.0], dtype=F64), torch.linspace(-1.5, 1.5, 6, dtype=F64)
    assert float(quadrature_error(act, w, v).max()) <= DEFAULT_TOL
    assert float(quadrature_error(act, w, v, b_w, b_v).max()) <= DEFAULT_TOL
    # first and second derivatives in (a, b, c, mu, nu), order n against 2n: the gradient within
    # DEFAULT_TOL up to the stated norm, the Hessian within DEFAULT_TOL up to norm 3
    for norm, grad_tol, hess_tol in [(s, DEFAULT_TOL, 1e-10), (3.0, DEFAULT_TOL, DEFAULT_TOL)]:
        n2 = norm * norm
        q = torch.tensor(
            [[n2, n2, 0.99 * n2, 1.0, -0.5], [n2, 1.0, -norm, 0.0, 2.0], [n2, n2, n2, 0.0, 0.0]],
            dtype=F64,
        )
        coarse = kernel_taylor(act, q, 2, DEFAULT_ORDER)
        fine = kernel_taylor(act, q, 2, 2 * DEFAULT_ORDER)
        assert _rel(coarse[1], fine[1]) < grad_tol
        assert _rel(coarse[2], fine[2]) < hess_tol


def test_too_low_an_order_is_refused() -> None:
    teacher = make_teacher(3, 3, "tanh", "orthonormal", "ones", seed=0, scale=3.0)
    student = Architecture(3, (2,), 1, "tanh", bias=False, output_bias=False)
    with pytest.raises(
        ValueError, match=r"quadrature order 48 reaches only .* above the requested"
    ):
        PopulationObjective(student, teacher.arch, teacher.theta, order=48)
    w = teacher.arch.unflatten(teacher.theta)[0].weight
    assert check_quadrature_order("tanh", w) <= DEFAULT_TOL
    with pytest.raises(ValueError, match="raise the order"):
        check_quadrature_order("tanh", w, order=DEFAULT_ORDER, tol=1e-17)


def test_linear_population_loss_is_a_frobenius_norm() -> None:
    """f = A(Wx + b), f* = A*(W*x + b*): L = 1/2 |A W - A* W*|_F^2 + 1/2 |A b - A* b*|^2, since
    E[x x^T] = I and E[x] = 0."""
    t_arch = Architecture(4, (3,), 2, "linear", bias=True, output_bias=False)
    t_theta = t_arch.init(1, seed=1, scheme="normal")[0]
    student = Architecture(4, (5,), 2, "linear", bias=True, output_bias=False)
    obj = PopulationObjective(student, t_arch, t_theta)
    theta = student.init(3, seed=2, scheme="normal")
    s, t = student.unflatten(theta), t_arch.unflatten(t_theta)
    a_w = s[1].weight @ s[0].weight - t[1].weight @ t[0].weight
    a_b = (s[1].weight @ s[0].bias.unsqueeze(-1)).squeeze(-1) - t[1].weight @ t[0].bias
    expected = 0.5 * a_w.square().sum((1, 2)) + 0.5 * a_b.square().sum(-1)
    torch.testing.assert_close(obj.loss(theta), expected, rtol=1e-13, atol=0)


def test_relu_at_collinear_and_zero_vectors() -> None:
    """Collinear incoming vectors: finite gradient, and the Hessian is the continuous limit of
    nearby Hessians (the kernel is C^2 there). A zero row: finite loss and gradient."""
    teacher = make_teacher(3, 2, "relu", "gaussian", "gaussian", seed=4)
    student = Architecture(3, (3,), 1, "relu", bias=False, output_bias=False)
    obj = student_objective(teacher, student, None)
    theta = student.init(1, seed=1, scheme="normal")
    w = student.unflatten(theta)[0].weight
    t_w = teacher.arch.unflatten(teacher.theta)[0].weight
    w[0, 1] = 2.0 * w[0, 0]  # student-student collinear
    w[0, 2] = -0.5 * t_w[0]  # opposite a teacher unit
    assert float(obj.min_incoming_angle(theta)[0]) < 1e-7
    _, grad = obj.loss_and_grad(theta)
    hess = obj.hessian(theta)
    assert torch.isfinite(grad).all() and torch.isfinite(hess).all()
    near = theta.clone()
    student.unflatten(near)[0].weight[0, 1, 0] += 1e-6
    student.unflatten(near)[0].weight[0, 2, 1] += 1e-6
    assert 1e-7 < float(obj.min_incoming_angle(near)[0]) < 1e-5
    assert _rel(obj.hessian(near), hess) < 1e-5
    assert _rel(_fd_grad(obj, theta), grad) < 1e-8
    zero = theta.clone()
    student.unflatten(zero)[0].weight[0, 0] = 0.0
    assert float(obj.min_incoming_angle(zero)[0]) == 0.0
    z_loss, z_grad = obj.loss_and_grad(zero)
    assert torch.isfinite(z_loss).all() and torch.isfinite(z_grad).all()
    mean, stderr = _mc_loss(student, zero, teacher, 3, n=400_000)
    assert (mean - z_loss).abs().max() < 5.0 * stderr.max()


def test_min_incoming_angle_values() -> None:
    w = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [-3.0, 1e-9]]], dtype=F64)
    t_w = torch.tensor([[1.0, 1.0]], dtype=F64)
    angles = min_incoming_angle(w, t_w)
    assert float(angles[0]) == pytest.approx(math.pi / 4, rel=1e-14)
    assert float(angles[1]) == pytest.approx(1e-9 / 3, rel=1e-6)


def test_splitting_matrix_with_biases_matches_a_large_sample() -> None:
    teacher = make_teacher(2, 2, "tanh", "gaussian", "gaussian", bias=True, seed=3)
    student = Architecture(2, (3,), 1, "tanh", bias=True, output_bias=False)
    theta = student.init(1, seed=5, scheme="normal")[0]
    exact = splitting_matrix(student_objective(teacher, student, None), theta, 1)
    sample = splitting_matrix(student_objective(teacher, student, 400_000, seed=1), theta, 1)
    assert exact.shape == (3, 3)
    assert _rel(sample, exact) < 2e-2


@pytest.mark.parametrize(
    ("arch", "match"),
    [
        (Architecture(3, (2,), 1, "relu", bias=True, output_bias=False), "'relu'.*bias-free"),
        (Architecture(3, (2,), 1, "erf", bias=True, output_bias=False), "'erf'.*bias-free"),
        (Architecture(3, (2,), 1, "tanh", bias=False, output_bias=True), "output without bias"),
        (Architecture(3, (2, 2), 1, "tanh", bias=False), "exactly one hidden layer"),
    ],
    ids=["relu-bias", "erf-bias", "output-bias", "two-layers"],
)
def test_refusals_name_what_is_supported(arch: Architecture, match: str) -> None:
    teacher = make_teacher(3, 2, arch.activation, seed=0)
    with pytest.raises(ValueError, match=match) as info:
        PopulationObjective(arch, teacher.arch, teacher.theta)
    message = str(info.value)
    assert "\n" not in message
    assert "supported: erf and relu without hidden biases; linear, tanh, sigmoid and" in message
    with pytest.raises(ValueError, match="share the activation, got 'tanh' and 'relu'"):
        relu_teacher = make_teacher(3, 2, "relu", seed=0)
        tanh_student = Architecture(3, (2,), 1, "tanh", bias=False, output_bias=False)
        PopulationObjective(tanh_student, relu_teacher.arch, relu_teacher.theta)
    with pytest.raises(ValueError, match="needs bias-free units"):
        population_kernel("relu", torch.ones(1, 2), torch.ones(1, 2), torch.ones(1), None)


def test_erf_kernel_is_unchanged() -> None:
    w, v, _, _ = _rows(1, False)
    torch.testing.assert_close(population_kernel("erf", w, v), erf_kernel(w, v), rtol=0, atol=0)


def test_the_experiments_take_the_closed_form_population_losses() -> None:
    """relu and linear teachers run on the exact population loss; relu endpoints record how close
    they sit to a kink; the quadrature activations and relu with biases are refused by name."""
    from escapelab.config import SpecError, build
    from escapelab.experiments.base import Task
    from escapelab.experiments.width_sweep import WidthSweep, WidthSweepSpec

    relu = {
        "teacher": {"activation": "relu", "width": 2, "incoming": "orthonormal", "scale": 1.0},
        "student": {"widths": [3], "seeds": 3},
        "train": {"steps": 300, "refine_steps": 20},
    }
    spec = build(WidthSweepSpec, relu)
    task = Task("m=0003/seeds=00000-00002", {"m": 3, "lo": 0, "hi": 3})
    records = WidthSweep().run_task(spec, task, torch.device("cpu"))
    assert len(records) == 3
    assert all(0.0 <= r["kink_angle"] <= math.pi / 2 for r in records)
    assert build(WidthSweepSpec, {"teacher": {"activation": "linear", "bias": True}})
    with pytest.raises(SpecError, match=r"teacher\.activation: .*closed-form kernel.*'tanh'"):
        build(WidthSweepSpec, {"teacher": {"activation": "tanh"}})
    with pytest.raises(SpecError, match=r"student\.bias: .*relu networks needs bias = false"):
        build(WidthSweepSpec, {"teacher": {"activation": "relu"}, "student": {"bias": True}})
