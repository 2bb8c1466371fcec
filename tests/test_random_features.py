"""Random-feature ridge regression: the eigenframework against closed forms and simulation,
the kernels against Monte Carlo, the batched solver against direct solves, the experiment end
to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from escapelab.cli import main
from escapelab.config import SpecError, build
from escapelab.experiments.random_features import RandomFeaturesSpec
from escapelab.nets.random_features import feature_kernel, random_features
from escapelab.optim.ridge import Spectral
from escapelab.problems.regression_pools import eigenstructure, power_law_pool
from escapelab.runner.sweep import run, write_outputs
from escapelab.theory.rf_eigenframework import krr_risk, rf_risk

pytestmark = pytest.mark.usefixtures("single_thread")

D = 200
ISO = np.full(D, 1.0 / D)  # isotropic eigenvalues, and a target of unit power spread evenly


@pytest.mark.parametrize("n", [40, 100, 150])
def test_ridgeless_isotropic_underdetermined_matches_marchenko_pastur(n):
    """Hastie et al. (2019): n < d gives |v|^2 (1 - n/d) + noise d / (d - n) (noise included)."""
    noise = 0.1
    got = krr_risk(ISO, ISO, noise, n, 1e-12).test
    assert got == pytest.approx((1 - n / D) + noise * D / (D - n), rel=1e-6)


@pytest.mark.parametrize("n", [250, 400, 1000])
def test_ridgeless_isotropic_overdetermined_is_noise_times_n_over_n_minus_d(n):
    noise = 0.3
    assert krr_risk(ISO, ISO, noise, n, 1e-12).test == pytest.approx(noise * n / (n - D), rel=1e-6)


def test_isotropic_ridge_solves_the_marchenko_pastur_quadratic():
    """With d equal eigenvalues l, n = d l / (l + kappa) + delta / kappa is a quadratic in kappa;
    its positive root and E = (|v|^2 kappa^2/(l+kappa)^2 + noise) / (1 - d l^2/(n (l+kappa)^2))."""
    n, delta, lam, noise = 120, 0.7, 1.0 / D, 0.05
    # n kappa^2 + (n lam - d lam - delta) kappa - delta lam = 0
    b = n * lam - D * lam - delta
    kappa = (-b + math.sqrt(b * b + 4 * n * delta * lam)) / (2 * n)
    e_te = (kappa**2 / (lam + kappa) ** 2 + noise) / (1 - D * lam**2 / (n * (lam + kappa) ** 2))
    got = krr_risk(ISO, ISO, noise, n, delta)
    assert float(got.kappa) == pytest.approx(kappa, rel=1e-9)
    assert float(got.test) == pytest.approx(e_te, rel=1e-9)
    assert float(got.train) == pytest.approx((delta / (n * kappa)) ** 2 * e_te, rel=1e-9)


@pytest.mark.parametrize("k", [20, 60, 100])
def test_ridgeless_underparameterized_rf_is_projection_plus_ols(k):
    """k < n < d linear random features: the k random directions miss |v|^2 (1 - k/d) of the
    target, which acts as noise for least squares in k dimensions: (noise') n / (n - k)."""
    n, noise = 150, 0.1
    expected = (noise + (1 - k / D)) * n / (n - k)
    assert float(rf_risk(ISO, ISO, noise, n, k, 1e-12).test) == pytest.approx(expected, rel=1e-6)


def test_rf_risk_tends_to_kernel_ridge_as_k_grows():
    i = np.arange(1, 501.0)
    lam, v2 = i**-1.5 / (i**-1.5).sum(), i**-1.2 / (i**-1.2).sum()
    ks = np.array([1e3, 1e5, 1e7])
    rf = rf_risk(lam, v2, 0.01, 100, ks, 1e-3).test
    krr = float(krr_risk(lam, v2, 0.01, 100, 1e-3).test)
    gaps = np.abs(rf / krr - 1)
    assert gaps[-1] < 1e-5 and gaps[0] > gaps[1] > gaps[2]


def test_rf_risk_at_optimal_ridge_falls_in_k_and_n_and_kernel_is_best():
    """The paper's Theorems 1 and 2, checked on the theory itself."""
    i = np.arange(1, 1001.0)
    lam, v2 = i**-1.5 / (i**-1.5).sum(), i**-1.3 / (i**-1.3).sum()
    ridges = np.geomspace(1e-7, 10, 120)
    ks = np.geomspace(10, 5000, 12)
    best_k = rf_risk(lam, v2, 0.01, 200, ks[:, None], 200 * ridges).test.min(1)
    assert (np.diff(best_k) < 0).all()
    ns = np.geomspace(10, 2000, 12)
    best_n = rf_risk(lam, v2, 0.01, ns[:, None], 300, ns[:, None] * ridges).test.min(1)
    assert (np.diff(best_n) < 0).all()
    assert krr_risk(lam, v2, 0.01, 200, 200 * ridges).test.min() < best_k.min()


@pytest.mark.parametrize("name", ["linear", "relu", "erf"])
def test_feature_kernel_is_the_mean_of_random_features(name):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64) / math.sqrt(5)
    w = torch.randn(5, 400_000, generator=gen, dtype=torch.float64)
    z = random_features(x, w, name)
    exact = feature_kernel(x, x, name)
    assert torch.allclose(z @ z.T, exact, atol=8e-3)


def test_relu_kernel_diagonal_is_half_the_squared_norm():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(
        feature_kernel(x, x, "relu").diagonal(), torch.tensor([12.5, 0.5]).double()
    )


def test_spectral_solver_matches_direct_ridge_solves_for_features_and_kernels():
    gen = torch.Generator().manual_seed(1)
    z, y, ze = (
        torch.randn(2, *s, generator=gen, dtype=torch.float64)
        for s in ((30, 50), (30, 3), (40, 50))
    )
    deltas = torch.tensor([1e-3, 0.5, 20.0], dtype=torch.float64)
    feat = Spectral.from_features(z, y, ze)
    kern = Spectral.from_kernel(z @ z.mT, y, ze @ z.mT)
    for s in range(2):
        for j, delta in enumerate(deltas):
            a = torch.linalg.solve(z[s].T @ z[s] + delta * torch.eye(50).double(), z[s].T @ y[s])
            sse = (z[s] @ a - y[s]).square().sum()
            for sp in (feat, kern):
                assert torch.allclose(sp.predict(deltas)[s, j], ze[s] @ a, atol=1e-9)
                assert float(sp.train_sse(deltas)[s, j]) == pytest.approx(float(sse), rel=1e-9)


def test_linear_rf_simulation_agrees_with_theory_on_a_power_law_pool():
    """Linear random features on the power-law pool: mean test risk over 12 seeds within 10 %
    of the eigenframework at three (k, n, ridge) points, and the train risk within 15 %."""
    pool = power_law_pool(1500, 300, 1.5, 1.3, 0.02, seed=3)
    eig = eigenstructure(pool, "linear")
    gen = torch.Generator().manual_seed(7)
    for k, n, rho in ((60, 150, 1e-3), (300, 150, 1e-4), (150, 300, 1e-2)):
        tests, trains = [], []
        for _ in range(12):
            idx = torch.randperm(pool.size, generator=gen)[:n]
            w = torch.randn(300, k, generator=gen, dtype=torch.float64)
            z = random_features(pool.x, w, "linear")
            sp = Spectral.from_features(z[idx][None], pool.y[idx][None], z[None])
            delta = torch.tensor([rho * n], dtype=torch.float64)
            tests.append(float((sp.predict(delta)[0, 0] - pool.y).square().sum(-1).mean()))
            trains.append(float(sp.train_sse(delta)[0, 0]) / n)
        theory = rf_risk(eig.lam, eig.v2, eig.noise, n, k, rho * n)
        assert np.mean(tests) == pytest.approx(float(theory.test), rel=0.10)
        assert np.mean(trains) == pytest.approx(float(theory.train), rel=0.15)


def test_power_law_pool_has_the_asked_spectrum():
    eig = eigenstructure(power_law_pool(2000, 400, 1.5, 1.5, 0.0, seed=0), "linear")
    assert eig.exponent() == pytest.approx(1.5, abs=0.1)
    assert eig.v2.sum() == pytest.approx(1.0, rel=0.1) and eig.noise < 1e-9


TINY = {
    "datasets": ["digits"],
    "feature_maps": ["relu"],
    "pool_size": 600,
    "ks": [16, 64, 256],
    "n_fixed": 64,
    "ns": [16, 64, 128],
    "k_fixed": 64,
    "ridges": [1e-8, 1e-4, 1e-2, 1.0],
    "val_size": 50,
    "theory_points": 8,
    "seeds": 2,
}


def test_experiment_runs_stores_summarizes_draws_and_resumes(tmp_path):
    outcome = run("random-features", TINY, store=tmp_path / "s", progress=False)
    assert outcome.tasks_run == 2
    sims = [r for r in outcome.records if r["kind"] == "sim"]
    assert len(sims) == 2 * (3 + 1 + 3 + 3)
    rows = [r for r in outcome.summary if "claim" not in r]
    assert all(len(r["ridges"]) == 4 for r in sims)
    # the theory is read at every measured point; the kernel point sits beside the k sweep
    assert all("theory_opt" in r for r in rows)
    assert {r["k"] for r in rows if r["sweep"] == "k"} == {16, 64, 256, "inf"}
    claims = {r["claim"]: r for r in outcome.summary if "claim" in r}
    assert "kernel limit (k = inf) is best" in claims
    assert claims["simulation matches theory"]["measured"] < 0.3
    for r in sims:  # held-out risk is the pool risk without the training samples
        assert r["heldout"][0] >= r["test"][0] - 1e-12 or r["train"][0] > r["test"][0]
    out = write_outputs(outcome, tmp_path / "out")
    assert (tmp_path / "out" / "random_features_digits_relu.png").stat().st_size > 10_000
    assert out.exists()
    again = run("random-features", TINY, store=tmp_path / "s", progress=False)
    assert again.tasks_run == 0 and again.records == outcome.records


@pytest.mark.parametrize(
    ("assignment", "field", "allowed"),
    [
        ({"ks": [0, 8]}, "ks[0]", ">= 1"),
        ({"n_fixed": 0}, "n_fixed", ">= 1"),
        ({"feature_maps": ["tanh"]}, "feature_maps[0]", "relu"),
        ({"power_law": {"noise": 1.5}}, "power_law.noise", "<= 1"),
        ({"ridges": [0.0]}, "ridges[0]", "> 0"),
        ({"datasets": ["digits"], "ns": [1700]}, "ns", "digits pool"),
    ],
)
def test_spec_errors_name_the_field(assignment, field, allowed):
    with pytest.raises(SpecError) as err:
        build(RandomFeaturesSpec, assignment)
    assert err.value.field == field and allowed in str(err.value)


def test_cli_reports_an_unknown_feature_map_in_one_line(tmp_path):
    result = CliRunner().invoke(
        main, ["run", "random-features", "--store", str(tmp_path), "--set", "feature_maps=cos"]
    )
    assert result.exit_code == 2
    assert "feature_maps[0]" in result.output and "Traceback" not in result.output
