"""Oracle tests of the loss-landscape geometry: exact Taylor slices of quadratics, planted
barriers, filter norms, the module front-end against the flat one, and the figures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from escapelab.landscape.geometry import (
    filter_normalize,
    interpolate,
    interpolate_module,
    module_vector,
    param_shapes,
    random_direction,
    slice_1d,
    slice_1d_module,
    slice_2d,
    slice_2d_module,
)
from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import DataObjective, Objective
from escapelab.report.geometry_figures import plot_interpolation, plot_slice_1d, plot_slice_2d

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
ARCH = Architecture(3, (4,), 2, activation="tanh", bias=True, output_bias=True)  # P = 26


class Quadratic(Objective):
    """L(theta) = 1/2 theta^T H theta + b^T theta + c on the parameters of ``arch``."""

    def __init__(self, arch: Architecture, h: Tensor, b: Tensor, c: float):
        self.arch, self.h, self.b, self.c = arch, h, b, c

    def member_loss(self, theta: Tensor) -> Tensor:
        return 0.5 * theta @ self.h @ theta + self.b @ theta + self.c

    def to(self, dtype: torch.dtype) -> Quadratic:
        return Quadratic(self.arch, self.h.to(dtype), self.b.to(dtype), self.c)

    def grad(self, theta: Tensor) -> Tensor:
        return self.h @ theta + self.b


class DoubleWell(Objective):
    """L(theta) = (theta_0^2 - 1)^2 + theta_1: wells at theta_0 = +-1, tilted along theta_1."""

    arch = Architecture(1, (1,), 1, bias=False)  # P = 2

    def member_loss(self, theta: Tensor) -> Tensor:
        return (theta[0] ** 2 - 1.0) ** 2 + theta[1]

    def to(self, dtype: torch.dtype) -> DoubleWell:
        return self


def _quadratic(seed: int, convex: bool) -> Quadratic:
    gen = torch.Generator().manual_seed(seed)
    p = ARCH.n_params
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=F64))
    eig = torch.linspace(0.1 if convex else -2.0, 3.0, p, dtype=F64)
    h = (q * eig) @ q.T
    return Quadratic(ARCH, 0.5 * (h + h.T), torch.randn(p, generator=gen, dtype=F64), 0.7)


def _theta(seed: int) -> Tensor:
    return ARCH.init(1, seed, scheme="normal").squeeze(0)


def _taylor(q: Quadratic, theta: Tensor, dirs: list[Tensor], coeffs: list[Tensor]) -> Tensor:
    """L(theta + sum_k c_k d_k) = L0 + sum_k c_k g.d_k + 1/2 sum_kl c_k c_l d_k^T H d_l."""
    g = q.grad(theta)
    out = q.member_loss(theta) + sum(c * (g @ d) for c, d in zip(coeffs, dirs, strict=True))
    for ck, dk in zip(coeffs, dirs, strict=True):
        for cl, dl in zip(coeffs, dirs, strict=True):
            out = out + 0.5 * ck * cl * (dk @ q.h @ dl)
    return out


@pytest.mark.parametrize("kind", ["random", "eigenvector"])
def test_slice_1d_of_quadratic_is_its_taylor_polynomial(kind: str) -> None:
    q, theta = _quadratic(0, convex=False), _theta(1)
    alpha = torch.linspace(-2.0, 2.0, 33, dtype=F64)
    given = None
    if kind == "eigenvector":
        evals, evecs = torch.linalg.eigh(q.h)
        given = evecs[:, 0]
    res = slice_1d(q, theta, given, alpha=alpha, chunk=5)
    if kind == "eigenvector":
        assert torch.equal(res.direction, given) and not res.normalized
        g = q.grad(theta)
        expected = q.member_loss(theta) + alpha * (g @ given) + 0.5 * evals[0] * alpha**2
        torch.testing.assert_close(res.loss, expected, rtol=1e-12, atol=1e-12)
    else:
        assert res.normalized
    torch.testing.assert_close(
        res.loss, _taylor(q, theta, [res.direction], [alpha]), rtol=1e-12, atol=1e-12
    )
    assert res.center_loss == pytest.approx(float(q.member_loss(theta)), rel=1e-14)


def test_slice_2d_of_quadratic_is_its_taylor_polynomial() -> None:
    q, theta = _quadratic(2, convex=False), _theta(3)
    alpha = torch.linspace(-1.0, 1.0, 7, dtype=F64)
    beta = torch.linspace(-0.5, 1.5, 5, dtype=F64)
    res = slice_2d(q, theta, alpha=alpha, beta=beta, seed=4, chunk=6)
    assert res.loss.shape == (7, 5)
    a, b = torch.meshgrid(alpha, beta, indexing="ij")
    expected = _taylor(q, theta, list(res.directions), [a, b])
    torch.testing.assert_close(res.loss, expected, rtol=1e-12, atol=1e-12)


def test_barrier_is_zero_for_a_convex_quadratic() -> None:
    q = _quadratic(5, convex=True)
    theta_a, theta_b = _theta(6), _theta(7)
    t = torch.linspace(-0.5, 1.5, 81, dtype=F64)
    res = interpolate(q, theta_a, theta_b, t=t, chunk=16)
    assert res.barrier == 0.0 and res.barrier_t == 0.0
    assert res.loss_a == pytest.approx(float(q.member_loss(theta_a)), rel=1e-14)
    assert res.loss_b == pytest.approx(float(q.member_loss(theta_b)), rel=1e-14)
    # along the path L is a convex parabola whose curvature is the H-norm of theta_b - theta_a
    delta = theta_b - theta_a
    chord = (1 - t) * res.loss_a + t * res.loss_b
    expected = chord - 0.5 * t * (1 - t) * (delta @ q.h @ delta)
    torch.testing.assert_close(res.loss, expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize(
    "t",
    [None, torch.linspace(-0.5, 1.5, 81), [0.25, 0.5, 0.75]],
    ids=["default", "extrapolated", "no-endpoints"],
)
def test_barrier_of_a_planted_double_well(t: object) -> None:
    # theta(t) = (2t - 1, 2t): L = 16 t^2 (t - 1)^2 + 2t and the chord is 2t, so the barrier is
    # 16 max t^2 (1 - t)^2 = 1 at t = 1/2, although max_t L - max(L_a, L_b) = 0 on [0, 1]
    theta_a = torch.tensor([-1.0, 0.0], dtype=F64)
    theta_b = torch.tensor([1.0, 2.0], dtype=F64)
    res = interpolate(DoubleWell(), theta_a, theta_b, t=t, chunk=7)
    assert (res.loss_a, res.loss_b) == (0.0, 2.0)
    assert res.barrier == pytest.approx(1.0, rel=1e-14)
    assert res.barrier_t == 0.5
    ts = res.t
    torch.testing.assert_close(res.loss, 16 * ts**2 * (ts - 1) ** 2 + 2 * ts)


def test_filter_normalised_directions_match_the_filter_norms_of_theta() -> None:
    arch = Architecture(3, (5, 4), 2, bias=True, output_bias=True)
    theta = arch.init(1, 0, scheme="normal").squeeze(0)
    arch.unflatten(theta)[1].weight[2].zero_()  # a dead unit: its filter must stay zero
    shapes = param_shapes(arch)
    for bias in ("zero", "layer"):
        d = random_direction(theta, shapes, torch.Generator().manual_seed(1), bias=bias)
        for ld, lt in zip(arch.unflatten(d), arch.unflatten(theta), strict=True):
            torch.testing.assert_close(
                ld.weight.norm(dim=1), lt.weight.norm(dim=1), rtol=1e-13, atol=0
            )
            if bias == "zero":
                assert not ld.bias.any()
            else:
                torch.testing.assert_close(ld.bias.norm(), lt.bias.norm(), rtol=1e-13, atol=0)
        assert not arch.unflatten(d)[1].weight[2].any()

    # module form: dim 0 of every tensor with ndim >= 2 is a filter (conv kernels included)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.Flatten(), nn.LayerNorm(12), nn.Linear(12, 4)
    ).double()
    theta = module_vector(model)
    raw = torch.randn(theta.shape[0], dtype=F64)
    d = filter_normalize(raw, theta, param_shapes(model), bias="layer")
    offset = 0
    for p in model.parameters():
        n = p.numel()
        piece, ref = d[offset : offset + n].view_as(p), theta[offset : offset + n].view_as(p)
        if p.ndim >= 2:
            torch.testing.assert_close(
                piece.flatten(1).norm(dim=1), ref.flatten(1).norm(dim=1), rtol=1e-13, atol=0
            )
        else:
            torch.testing.assert_close(piece.norm(), ref.norm(), rtol=1e-13, atol=0)
        offset += n


def test_seeded_directions_are_reproducible() -> None:
    q, theta = _quadratic(8, convex=False), _theta(9)
    grid = torch.linspace(-1.0, 1.0, 3, dtype=F64)
    r1 = slice_2d(q, theta, alpha=grid, beta=grid, seed=11)
    r2 = slice_2d(q, theta, alpha=grid, beta=grid, seed=11)
    r3 = slice_2d(q, theta, alpha=grid, beta=grid, seed=12)
    assert all(torch.equal(a, b) for a, b in zip(r1.directions, r2.directions, strict=True))
    assert torch.equal(r1.loss, r2.loss)
    assert not torch.equal(r1.directions[0], r3.directions[0])
    assert not torch.equal(r1.directions[0], r1.directions[1])
    # the first direction of a 2-D slice is the direction of a 1-D slice with the same seed
    assert torch.equal(slice_1d(q, theta, alpha=grid, seed=11).direction, r1.directions[0])


def _sequential(arch: Architecture, theta: Tensor) -> nn.Sequential:
    """The nn.Sequential that computes ``arch.forward(theta, .)`` (tanh hidden layers)."""
    mods: list[nn.Module] = []
    layers = arch.unflatten(theta)
    for i, layer in enumerate(layers):
        fan_out, fan_in = layer.weight.shape
        lin = nn.Linear(fan_in, fan_out, bias=layer.bias is not None, dtype=F64)
        with torch.no_grad():
            lin.weight.copy_(layer.weight)
            if layer.bias is not None:
                lin.bias.copy_(layer.bias)
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(nn.Tanh())
    return nn.Sequential(*mods)


def test_module_front_end_agrees_with_the_flat_one() -> None:
    arch = Architecture(3, (5, 4), 2, activation="tanh", bias=True, output_bias=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=gen, dtype=F64)
    y = torch.randn(30, 2, generator=gen, dtype=F64)
    obj = DataObjective(arch, x, y)
    theta_a, theta_b = arch.init(2, seed=3, scheme="normal")
    model = _sequential(arch, theta_a)
    torch.testing.assert_close(module_vector(model), theta_a, rtol=0, atol=0)

    def loss_fn(out: Tensor, target: Tensor) -> Tensor:
        return 0.5 * ((out - target) ** 2).sum(1).mean()

    def metric(points: Tensor) -> Tensor:
        return (arch.forward(points, x)[..., 0].sign() == y[:, 0].sign()).to(F64).mean(-1)

    def metric_fn(out: Tensor, target: Tensor) -> float:
        return float((out[:, 0].sign() == target[:, 0].sign()).to(F64).mean())

    # batches of 7 do not divide 30: the batch-size weighting must still give the full loss
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=7)
    t = torch.linspace(-0.25, 1.25, 7, dtype=F64)
    flat = interpolate(obj, theta_a, theta_b, t=t, metric=metric)
    mod = interpolate_module(model, loss_fn, loader, theta_a, theta_b, t=t, metric_fn=metric_fn)
    torch.testing.assert_close(mod.loss, flat.loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(mod.accuracy, flat.accuracy, rtol=1e-12, atol=1e-14)
    assert mod.barrier == pytest.approx(flat.barrier, rel=1e-10, abs=1e-14)

    grid = torch.linspace(-1.0, 1.0, 5, dtype=F64)
    flat1 = slice_1d(obj, theta_a, alpha=grid, seed=5)
    mod1 = slice_1d_module(model, loss_fn, (x, y), alpha=grid, seed=5)
    assert torch.equal(mod1.direction, flat1.direction)
    torch.testing.assert_close(mod1.loss, flat1.loss, rtol=1e-12, atol=1e-14)

    flat2 = slice_2d(obj, theta_a, alpha=grid, beta=grid[:3], seed=6, bias="layer")
    mod2 = slice_2d_module(model, loss_fn, (x, y), alpha=grid, beta=grid[:3], seed=6, bias="layer")
    torch.testing.assert_close(mod2.loss, flat2.loss, rtol=1e-12, atol=1e-14)
    assert mod2.center_loss == pytest.approx(flat2.center_loss, rel=1e-12)


def test_module_is_left_unchanged_even_when_the_loss_raises() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 1)).double()
    model.train()  # batch norm updates its running statistics in train mode
    x, y = torch.randn(16, 3, dtype=F64), torch.randn(16, 1, dtype=F64)
    params = list(model.parameters())
    before = [t.detach().clone() for t in (*params, *model.buffers())]
    pointers = [p.data_ptr() for p in params]

    def unchanged() -> bool:
        now = [*model.parameters(), *model.buffers()]
        same = all(torch.equal(a, b) for a, b in zip(now, before, strict=True))
        return same and [p.data_ptr() for p in params] == pointers

    grid = torch.linspace(-1.0, 1.0, 3, dtype=F64)
    slice_2d_module(model, nn.functional.mse_loss, (x, y), alpha=grid, beta=grid)
    assert unchanged()
    assert all(p.requires_grad and p.grad is None for p in params)

    calls = {"n": 0}

    def failing_loss(out: Tensor, target: Tensor) -> Tensor:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("planted failure")
        return nn.functional.mse_loss(out, target)

    with pytest.raises(RuntimeError, match="planted failure"):
        slice_1d_module(model, failing_loss, (x, y), alpha=grid)
    assert unchanged()


def test_invalid_inputs_are_rejected() -> None:
    q, theta = _quadratic(0, convex=True), _theta(1)
    with pytest.raises(ValueError, match="flat parameter vector"):
        slice_1d(q, theta.unsqueeze(0))
    with pytest.raises(ValueError, match="all slice directions or none"):
        slice_2d(q, theta, (theta, None))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ"):
        interpolate(q, theta, theta[:-1])


def _png(path: Path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_write_pngs(tmp_path: Path) -> None:
    theta_a = torch.tensor([-1.0, 0.0], dtype=F64)
    theta_b = torch.tensor([1.0, 2.0], dtype=F64)
    interp = interpolate(DoubleWell(), theta_a, theta_b, t=torch.linspace(-0.25, 1.25, 31))
    accuracy = torch.linspace(0.9, 0.6, 31, dtype=F64)
    with_acc = type(interp)(**{**interp.__dict__, "accuracy": accuracy})
    q, theta = _quadratic(3, convex=True), _theta(4)
    s1 = slice_1d(q, theta, alpha=torch.linspace(-2, 2, 21))
    s2 = slice_2d(q, theta, alpha=torch.linspace(-2, 2, 15), beta=torch.linspace(-1, 1, 11))
    paths = [
        plot_interpolation(with_acc, tmp_path / "interp.png"),
        plot_slice_1d(s1, tmp_path / "s1.png"),
        plot_slice_2d(s2, tmp_path / "s2.png"),
        plot_slice_2d(s2, tmp_path / "deep" / "s2_log.png", log=True),
    ]
    assert all(_png(p) for p in paths)
