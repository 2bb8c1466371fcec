"""Oracle tests of escapelab.landscape.curvature.

Oracles: ``torch.autograd.functional.hessian`` of the loss as a function of the flat parameter
vector (through ``torch.func.functional_call``) and its ``eigvalsh``; quadratic models
0.5 theta^T A theta with A = Q diag(lambda) Q^T built from a chosen spectrum, whose trace,
moments and spectral split are known, and whose Hutchinson variance 2 (||A||_F^2 - sum A_jj^2)
is known exactly.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from escapelab.landscape.curvature import (
    exact_hessian,
    hutchinson_trace,
    hvp_operator,
    lanczos_eigs,
    spectral_density,
)

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
N_SAMPLES = 32


# --------------------------------------------------------------------------- fixtures


def make_mlp(seed: int = 0, batchnorm: bool = False) -> nn.Sequential:
    """4 -> 8 (tanh) -> 3 in float64 with N(0, 1) parameters: P = 67 (83 with BatchNorm)."""
    layers: list[nn.Module] = [nn.Linear(4, 8)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.Tanh(), nn.Linear(8, 3)]
    model = nn.Sequential(*layers).to(F64)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=F64))
    return model


def make_data(seed: int = 1) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, 4, generator=gen, dtype=F64)
    y = torch.randn(N_SAMPLES, 3, generator=gen, dtype=F64)
    return x, y


MSE = nn.MSELoss()


def reference_hessian(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Hessian of the full-batch MSE in the flat parameter vector, by torch.autograd."""
    named = list(model.named_parameters())
    sizes = [p.numel() for _, p in named]

    def loss(flat: Tensor) -> Tensor:
        parts = flat.split(sizes)
        values = {n: t.view(p.shape) for (n, p), t in zip(named, parts, strict=True)}
        return MSE(torch.func.functional_call(model, values, (x,)), y)

    flat0 = torch.cat([p.detach().reshape(-1) for _, p in named])
    return torch.autograd.functional.hessian(loss, flat0)


@pytest.fixture(scope="module")
def mlp_case() -> tuple[nn.Sequential, Tensor, Tensor, Tensor]:
    model = make_mlp()
    x, y = make_data()
    return model, x, y, reference_hessian(model, x, y)


class Quadratic(nn.Module):
    """loss = 0.5 theta^T A theta for every batch (inputs are ones, targets are ignored)."""

    def __init__(self, a: Tensor, theta: Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.theta = nn.Parameter(theta)

    def forward(self, ones: Tensor) -> Tensor:
        return ones[:, 0] * (0.5 * self.theta @ self.a @ self.theta)


def mean_output(outputs: Tensor, targets: Tensor) -> Tensor:
    return outputs.mean()


def quadratic_case(spectrum: Tensor, seed: int = 3) -> tuple[Quadratic, tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    p = spectrum.numel()
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=F64))
    a = q @ torch.diag(spectrum) @ q.T
    model = Quadratic(0.5 * (a + a.T), torch.randn(p, generator=gen, dtype=F64))
    return model, (torch.ones(8, 1, dtype=F64), torch.zeros(8, dtype=F64))


def gapped_spectrum() -> Tensor:
    """20 eigenvalues in [-2, -1] and 40 in [1, 3]: a third of the mass below the gap at 0."""
    return torch.cat([torch.linspace(-2, -1, 20), torch.linspace(1, 3, 40)]).to(F64)


def hutchinson_sd(a: Tensor) -> float:
    """Exact standard deviation of one Rademacher probe's z^T A z."""
    return math.sqrt(2 * (a.square().sum() - a.diagonal().square().sum()).item())


# --------------------------------------------------------------------------- exact Hessian, HVP


def test_exact_hessian_equals_autograd(mlp_case) -> None:
    model, x, y, ref = mlp_case
    hess = exact_hessian(model, MSE, (x, y))
    assert hess.shape == (67, 67) and hess.dtype == F64
    torch.testing.assert_close(hess, ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(hess, hess.T)


def test_hvp_equals_hessian_times_vector(mlp_case) -> None:
    model, x, y, ref = mlp_case
    op = hvp_operator(model, MSE, (x, y))
    assert op.n_params == 67
    v = torch.randn(67, generator=torch.Generator().manual_seed(5), dtype=F64)
    torch.testing.assert_close(op.matvec(v), ref @ v, rtol=1e-10, atol=1e-12)
    lin = op.as_linear_operator()
    out = lin.matvec(v.numpy())
    assert out.dtype == np.float64 and out.shape == (67,)
    np.testing.assert_allclose(out, (ref @ v).numpy(), rtol=1e-10, atol=1e-12)
    assert op.n_matvecs == 2
    parts = op.unflatten(v)
    assert list(parts) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert parts["2.weight"].shape == (3, 8)


@pytest.mark.parametrize("reuse_graph", [True, False])
def test_kept_graph_and_batched_products_equal_the_hessian(mlp_case, reuse_graph: bool) -> None:
    model, x, y, ref = mlp_case
    model = copy.deepcopy(model)  # moved below; the fixture is shared
    op = hvp_operator(model, MSE, (x, y), reuse_graph=reuse_graph)
    assert op.reuse_graph is reuse_graph
    vs = torch.randn(4, 67, generator=torch.Generator().manual_seed(6), dtype=F64)
    torch.testing.assert_close(op.matmat(vs), vs @ ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(vs[0]), ref @ vs[0], rtol=1e-10, atol=1e-12)
    assert op.n_matvecs == 5
    # an in-place update of the parameters rebuilds the kept graph: products of the new point
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    moved = reference_hessian(model, x, y)
    torch.testing.assert_close(op.matvec(vs[1]), moved @ vs[1], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(k, 67\)"):
        op.matmat(vs[0])


def test_kept_graph_is_the_default_for_one_batch_only(mlp_case) -> None:
    model, x, y, _ = mlp_case
    assert hvp_operator(model, MSE, (x, y)).reuse_graph
    assert not hvp_operator(model, MSE, [(x[:5], y[:5]), (x[5:], y[5:])]).reuse_graph
    with pytest.raises(ValueError, match="reuse_graph=True needs BatchNorm layers in eval mode"):
        hvp_operator(make_mlp(batchnorm=True), MSE, (x, y), reuse_graph=True)


def test_linear_loss_and_unused_parameter_give_zero_curvature() -> None:
    model = nn.Linear(3, 1).to(F64)
    model.register_parameter("unused", nn.Parameter(torch.ones(2, dtype=F64)))
    data = (torch.randn(5, 3, dtype=F64), torch.zeros(5, dtype=F64))
    op = hvp_operator(model, mean_output, data)
    assert op.n_params == 6
    assert torch.equal(op.matvec(torch.ones(6, dtype=F64)), torch.zeros(6, dtype=F64))
    assert torch.equal(exact_hessian(model, mean_output, data), torch.zeros(6, 6, dtype=F64))


def test_exact_hessian_refuses_large_models(mlp_case) -> None:
    model, x, y, _ = mlp_case
    with pytest.raises(ValueError, match="max_params=50"):
        exact_hessian(model, MSE, (x, y), max_params=50)


# --------------------------------------------------------------------------- Lanczos


@pytest.mark.parametrize("which", ["top", "bottom"])
def test_lanczos_matches_eigvalsh(mlp_case, which) -> None:
    model, x, y, ref = mlp_case
    exact = torch.linalg.eigvalsh(ref)
    scale = exact.abs().max().item()
    res = lanczos_eigs(model, MSE, (x, y), k=4, which=which, seed=0)
    expected = exact.flip(0)[:4] if which == "top" else exact[:4]
    torch.testing.assert_close(res.eigenvalues, expected, rtol=0, atol=1e-8 * scale)
    assert bool(res.converged.all())
    assert float(res.residuals.max()) < 1e-8 * scale
    assert res.eigenvectors is not None and res.eigenvectors.shape == (67, 4)
    vecs = res.eigenvectors
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(4, dtype=F64), rtol=0, atol=1e-8)
    torch.testing.assert_close(ref @ vecs, vecs * res.eigenvalues, rtol=0, atol=1e-7 * scale)
    assert res.n_matvecs > 4


def test_lanczos_is_reproducible_and_validates(mlp_case) -> None:
    model, x, y, _ = mlp_case
    first = lanczos_eigs(model, MSE, (x, y), k=2, seed=7, return_eigenvectors=False)
    again = lanczos_eigs(model, MSE, (x, y), k=2, seed=7, return_eigenvectors=False)
    assert first.eigenvectors is None
    assert torch.equal(first.eigenvalues, again.eigenvalues)
    assert first.n_matvecs == again.n_matvecs
    for k in (0, 67):
        with pytest.raises(ValueError, match="P - 1 = 66"):
            lanczos_eigs(model, MSE, (x, y), k=k)
    with pytest.raises(ValueError, match="which"):
        lanczos_eigs(model, MSE, (x, y), which="largest")


def test_lanczos_reports_non_convergence(mlp_case) -> None:
    model, x, y, _ = mlp_case
    with pytest.warns(RuntimeWarning, match="ARPACK converged"):
        res = lanczos_eigs(model, MSE, (x, y), k=4, which="bottom", maxiter=1, ncv=8)
    assert not bool(res.converged.all())
    assert torch.equal(res.eigenvalues.isnan(), ~res.converged)
    assert torch.equal(res.residuals.isnan(), ~res.converged)


def test_lanczos_in_float32_reaches_float32_accuracy(mlp_case) -> None:
    _, x, y, ref = mlp_case
    exact = torch.linalg.eigvalsh(ref).flip(0)[:3]
    res = lanczos_eigs(make_mlp().float(), MSE, (x.float(), y.float()), k=3)
    assert bool(res.converged.all())
    torch.testing.assert_close(res.eigenvalues, exact, rtol=1e-4, atol=0)
    assert float(res.residuals.max()) < 1e-3 * float(exact[0])


# --------------------------------------------------------------------------- Hutchinson


def test_hutchinson_within_four_standard_errors() -> None:
    spectrum = gapped_spectrum()
    model, data = quadratic_case(spectrum)
    sd = hutchinson_sd(model.a)
    small = hutchinson_trace(model, mean_output, data, n_probes=25, seed=0)
    large = hutchinson_trace(model, mean_output, data, n_probes=400, seed=0)
    true = spectrum.sum().item()
    for est in (small, large):
        assert abs(est.trace - true) < 4 * est.stderr
        assert abs(est.trace - true) < 4 * sd / math.sqrt(est.n_probes)
    assert 0.75 < large.stderr / (sd / math.sqrt(400)) < 1.25
    assert large.stderr < small.stderr / 2


def test_hutchinson_stopping_rule_needs_min_probes_and_reports_convergence() -> None:
    spectrum = gapped_spectrum()
    model, data = quadratic_case(spectrum)
    true = spectrum.sum().item()
    # a rule any two probes would meet still takes min_probes probes (PyHessian's can stop at 2)
    loose = hutchinson_trace(model, mean_output, data, n_probes=100, rel_tol=10.0, seed=0)
    assert loose.n_probes == 10 and loose.converged
    # a tight rule: stops once stderr <= rel_tol |trace|, and the estimate is within 4 stderr
    est = hutchinson_trace(model, mean_output, data, n_probes=2000, rel_tol=0.02, seed=1)
    assert est.converged and 10 <= est.n_probes < 2000
    assert est.stderr <= 0.02 * abs(est.trace)
    assert abs(est.trace - true) < 4 * est.stderr
    # probes in blocks of 8 give the same numbers as one at a time
    one = hutchinson_trace(model, mean_output, data, n_probes=est.n_probes, seed=1, block=1)
    assert one.trace == pytest.approx(est.trace, rel=1e-12)
    # a budget too small for the rule: the estimate is returned, marked not converged
    short = hutchinson_trace(model, mean_output, data, n_probes=12, rel_tol=1e-6, seed=0)
    assert short.n_probes == 12 and not short.converged
    with pytest.raises(ValueError, match="min_probes must be >= 3"):
        hutchinson_trace(model, mean_output, data, rel_tol=0.1, min_probes=2)
    with pytest.raises(ValueError, match="rel_tol must be positive"):
        hutchinson_trace(model, mean_output, data, rel_tol=0.0)


def test_hutchinson_is_exact_for_diagonal_and_reproducible() -> None:
    spectrum = gapped_spectrum()
    model = Quadratic(torch.diag(spectrum), torch.zeros(60, dtype=F64))
    data = (torch.ones(4, 1, dtype=F64), torch.zeros(4, dtype=F64))
    est = hutchinson_trace(model, mean_output, data, n_probes=5, seed=2)
    assert est.trace == pytest.approx(spectrum.sum().item(), rel=1e-13)
    assert est.stderr < 1e-12
    model, data = quadratic_case(spectrum)
    a = hutchinson_trace(model, mean_output, data, n_probes=10, seed=4)
    assert a == hutchinson_trace(model, mean_output, data, n_probes=10, seed=4)
    assert a != hutchinson_trace(model, mean_output, data, n_probes=10, seed=5)
    with pytest.raises(ValueError, match="n_probes"):
        hutchinson_trace(model, mean_output, data, n_probes=1)


# --------------------------------------------------------------------------- spectral density


def test_slq_moments_match_spectrum() -> None:
    spectrum = gapped_spectrum()
    model, data = quadratic_case(spectrum)
    n_probes, p = 40, spectrum.numel()
    sd = spectral_density(model, mean_output, data, n_probes=n_probes, lanczos_steps=12, seed=1)
    assert sd.moment(0) == pytest.approx(1.0, abs=1e-12)
    assert bool((sd.weights >= 0).all())
    a2 = model.a @ model.a
    for order, power in ((1, model.a), (2, a2)):
        true = spectrum.pow(order).sum().item() / p
        tol = 4 * hutchinson_sd(power) / math.sqrt(n_probes) / p
        assert abs(sd.moment(order) - true) < tol
    # a Rademacher probe has |z|^2 = P, so with the same probes (same seed) the first moment is
    # exactly Hutchinson's estimate divided by P
    hutch = hutchinson_trace(model, mean_output, data, n_probes=n_probes, seed=1)
    assert sd.moment(1) == pytest.approx(hutch.trace / p, rel=1e-12)
    assert torch.trapezoid(sd.density, sd.grid).item() == pytest.approx(1.0, abs=1e-12)
    again = spectral_density(model, mean_output, data, n_probes=n_probes, lanczos_steps=12, seed=1)
    assert torch.equal(sd.nodes, again.nodes) and torch.equal(sd.density, again.density)


def test_slq_full_lanczos_recovers_every_eigenvalue() -> None:
    spectrum = gapped_spectrum()
    model, data = quadratic_case(spectrum)
    sd = spectral_density(model, mean_output, data, n_probes=3, lanczos_steps=100, seed=0)
    nodes = sd.nodes.reshape(3, 60)  # steps are capped at P = 60
    torch.testing.assert_close(nodes, spectrum.expand(3, -1), rtol=0, atol=1e-10)
    torch.testing.assert_close(sd.weights.reshape(3, 60).sum(1), torch.full((3,), 1 / 3, dtype=F64))


def test_slq_density_splits_mass_at_the_gap() -> None:
    spectrum = gapped_spectrum()
    model, data = quadratic_case(spectrum)
    n_probes = 30
    grid = torch.linspace(-4, 5, 3601, dtype=F64)
    sd = spectral_density(
        model, mean_output, data, n_probes=n_probes, lanczos_steps=20, seed=3, grid=grid, sigma=0.05
    )
    assert torch.equal(sd.grid, grid) and sd.sigma == 0.05
    below = grid < 0
    mass_below = torch.trapezoid(sd.density[below], grid[below]).item()
    # one probe's share below the gap is z^T Pi z / P for the projector Pi onto that eigenspace
    evals, evecs = torch.linalg.eigh(model.a)
    low = evecs[:, evals < 0]
    tol = 4 * hutchinson_sd(low @ low.T) / math.sqrt(n_probes) / 60 + 0.01
    assert abs(mass_below - 1 / 3) < tol
    gap = grid.abs() < 0.5
    assert sd.density[gap].max() < 0.05 * sd.density.max()


# --------------------------------------------------------------------------- micro-batching


class Unsized:
    """A re-iterable collection of batches without __len__."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return iter(self.batches)


def test_micro_batched_equals_full_batch(mlp_case) -> None:
    model, x, y, ref = mlp_case
    loader = DataLoader(TensorDataset(x, y), batch_size=10)  # 10, 10, 10, 2
    uneven = [(x[:5], y[:5]), (x[5:29], y[5:29]), (x[29:], y[29:])]
    v = torch.randn(67, generator=torch.Generator().manual_seed(9), dtype=F64)
    full = hvp_operator(model, MSE, (x, y)).matvec(v)
    for data in (loader, uneven, Unsized(uneven)):
        torch.testing.assert_close(
            hvp_operator(model, MSE, data).matvec(v), full, rtol=1e-12, atol=1e-13
        )
    torch.testing.assert_close(exact_hessian(model, MSE, loader), ref, rtol=1e-10, atol=1e-12)
    t_full = hutchinson_trace(model, MSE, (x, y), n_probes=4, seed=0)
    t_loader = hutchinson_trace(model, MSE, loader, n_probes=4, seed=0)
    assert t_loader.trace == pytest.approx(t_full.trace, rel=1e-12)
    assert t_loader.stderr == pytest.approx(t_full.stderr, rel=1e-9)


def test_bad_data_is_refused(mlp_case) -> None:
    model, x, y, _ = mlp_case
    with pytest.raises(ValueError, match="one-shot iterator"):
        hvp_operator(model, MSE, ((x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)))
    with pytest.raises(ValueError, match="pair"):
        hvp_operator(model, MSE, [(x, y, y)]).matvec(torch.zeros(67, dtype=F64))
    with pytest.raises(ValueError, match="no samples"):
        hvp_operator(model, MSE, []).matvec(torch.zeros(67, dtype=F64))
    with pytest.raises(ValueError, match="scalar"):
        hvp_operator(model, nn.MSELoss(reduction="none"), (x, y)).matvec(torch.zeros(67, dtype=F64))


# --------------------------------------------------------------------------- parameter selection


def test_params_pattern_selects_sub_block(mlp_case) -> None:
    model, x, y, ref = mlp_case
    hess = exact_hessian(model, MSE, (x, y), params="0.*")
    assert hess.shape == (40, 40)
    torch.testing.assert_close(hess, ref[:40, :40], rtol=1e-10, atol=1e-12)
    weights = torch.cat([torch.arange(0, 32), torch.arange(40, 64)])
    op = hvp_operator(model, MSE, (x, y), params=re.compile(r"\d\.weight"))
    assert op.param_names == ["0.weight", "2.weight"] and op.n_params == 56
    v = torch.randn(56, generator=torch.Generator().manual_seed(2), dtype=F64)
    block = ref[weights][:, weights]
    torch.testing.assert_close(op.matvec(v), block @ v, rtol=1e-10, atol=1e-12)
    union = hvp_operator(model, MSE, (x, y), params=["0.bias", "2.*"])
    assert union.param_names == ["0.bias", "2.weight", "2.bias"] and union.n_params == 35


def test_params_pattern_errors_and_frozen_parameters() -> None:
    model = make_mlp()
    x, y = make_data()
    with pytest.raises(ValueError, match=r"matches no trainable parameter.*'0\.weight'"):
        hvp_operator(model, MSE, (x, y), params="layers.0.*")
    model[0].weight.requires_grad_(False)
    assert hvp_operator(model, MSE, (x, y)).n_params == 35
    with pytest.raises(ValueError, match="only matches frozen"):
        hvp_operator(model, MSE, (x, y), params="0.weight")


# --------------------------------------------------------------------------- BatchNorm


def test_batchnorm_in_training_mode_with_micro_batches_is_refused() -> None:
    model = make_mlp(batchnorm=True)
    x, y = make_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    with pytest.raises(ValueError, match=r"BatchNorm.*model\.eval\(\)"):
        hvp_operator(model, MSE, loader)
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        hvp_operator(model, MSE, Unsized(batches)).matvec(torch.ones(83, dtype=F64))

    # one full batch is a well-defined function, and the running statistics are left alone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hutchinson_trace(model, MSE, (x, y), n_probes=2)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key

    model.eval()
    v = torch.ones(83, dtype=F64)
    full = hvp_operator(model, MSE, (x, y)).matvec(v)
    torch.testing.assert_close(
        hvp_operator(model, MSE, loader).matvec(v), full, rtol=1e-12, atol=1e-13
    )
