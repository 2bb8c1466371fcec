"""The catapult phase: the closed-form NTK against autograd Jacobians and the Hessian, the
phases of the two-layer linear net at rates with known outcomes, the experiment end to end."""

from __future__ import annotations

import pytest
import torch

from escapelab.config import SpecError, build
from escapelab.experiments.catapult import CatapultSpec, classify, hessian_top, train_rates
from escapelab.nets.wide_two_layer import forward, ntk_gram, top_ntk_eigenvalue
from escapelab.report.findings import findings
from escapelab.runner.sweep import run, write_outputs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_ntk_gram_is_the_jacobian_gram(activation):
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(2, 7, 3, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    gram = ntk_gram(u, v, x, activation)
    for e in range(2):
        ju, jv = torch.autograd.functional.jacobian(
            lambda a, b: forward(a[None], b[None], x, activation)[0], (u[e], v[e])
        )
        j = torch.cat([ju.reshape(5, -1), jv], dim=1)
        assert torch.allclose(gram[e], j @ j.T / 5, atol=1e-12)


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_top_hessian_eigenvalue_is_the_ntks_for_a_wide_net(activation):
    """At init the Hessian is the Gauss-Newton term J^T J / m plus a residual term that
    vanishes with width: Lanczos on the Hessian agrees with the NTK's top eigenvalue."""
    spec = build(CatapultSpec, {"width": 2048, "samples": 16, "dim": 8})
    from escapelab.experiments.catapult import init_weights, make_data

    x, y = make_data(spec)
    u, v = init_weights(spec, activation, 0, 1)
    ntk = float(top_ntk_eigenvalue(u, v, x, activation)[0])
    assert hessian_top(u[0], v[0], x, y, activation) == pytest.approx(ntk, rel=0.02)


def test_classification_rules():
    assert classify(1.0, 1.0, 0.1, 1.0, False, 0.05, 0.05) == "lazy"
    assert classify(1.0, 30.0, 0.1, 0.5, False, 0.05, 0.05) == "catapult"
    assert classify(1.0, 1.0, 0.1, 0.8, False, 0.05, 0.05) == "catapult"  # curvature fell
    assert classify(1.0, 1e9, 1e9, 1.0, True, 0.05, 0.05) == "divergent"
    assert classify(1.0, 2.0, 1.5, 0.5, False, 0.05, 0.05) == "stuck"


def test_linear_net_phases_at_rates_with_known_outcomes():
    """The wide two-layer linear net: lazy at eta * lambda0 = 1 (curvature unchanged), catapult
    at 3 (the loss rises, the curvature ends below 2 / eta), divergent at 6."""
    spec = build(
        CatapultSpec,
        {
            "activations": ["linear"],
            "width": 256,
            "samples": 16,
            "dim": 8,
            "rates": [1.0, 3.0, 6.0],
            "steps": 200,
            "seeds": 3,
        },
    )
    records = train_rates(spec, "linear", 0, 3)
    phase = {(r["rate"], r["member"]): r for r in records}
    for i in range(3):
        lazy, cat, div = (phase[(c, i)] for c in (1.0, 3.0, 6.0))
        assert lazy["phase"] == "lazy" and lazy["loss_max"] == lazy["loss0"]
        assert lazy["lambda_final"] == pytest.approx(lazy["lambda0_ntk"], rel=0.02)
        assert cat["phase"] == "catapult" and cat["loss_max"] > 2 * cat["loss0"]
        assert cat["eta_lambda_final"] < 2
        assert div["phase"] == "divergent"
        assert lazy["eta"] * lazy["lambda0"] == pytest.approx(1.0)


def test_a_seed_runs_as_it_would_alone():
    spec = build(CatapultSpec, {**TINY, "seeds": 3})
    both = [r for r in train_rates(spec, "relu", 0, 3) if r["member"] == 2]
    alone = train_rates(spec, "relu", 2, 3)
    for a, b in zip(both, alone, strict=True):
        assert a["phase"] == b["phase"] and a["lambda0"] == pytest.approx(b["lambda0"], rel=1e-12)
        assert a["loss_curve"] == pytest.approx(b["loss_curve"], rel=1e-9)


def test_curvature_option_picks_the_lambda0_that_sets_the_rate():
    spec = build(CatapultSpec, {**TINY, "curvature": "hessian", "steps": 2, "seeds": 1})
    for r in train_rates(spec, "linear", 0, 1):
        assert r["lambda0"] == r["lambda0_hessian"] != r["lambda0_ntk"]
        assert r["eta"] * r["lambda0_hessian"] == pytest.approx(r["rate"])


TINY = {
    "width": 128,
    "samples": 12,
    "dim": 4,
    "rates": [1.0, 3.0, 8.0],
    "steps": 80,
    "seeds": 2,
    "curvature_every": 20,
}


def test_experiment_runs_summarizes_draws_and_resumes(tmp_path):
    outcome = run("catapult", TINY, store=tmp_path / "s", progress=False)
    assert outcome.tasks_run == 2 and len(outcome.records) == 2 * 3 * 2
    assert all(r["marks"] == [0, 20, 40, 60, 80] for r in outcome.records)
    bounds = {r["activation"]: r for r in outcome.summary if r["kind"] == "boundary"}
    assert set(bounds) == {"linear", "relu"}
    assert bounds["linear"]["lazy_edge_low"] == 1.0 and bounds["linear"]["lazy_edge_high"] == 3.0
    rates = [r for r in outcome.summary if r["kind"] == "rate"]
    assert all(
        sum(r[f"p_{p}"] for p in ("lazy", "catapult", "divergent", "stuck")) == 1 for r in rates
    )
    said = findings("catapult", outcome.summary, {})
    assert said[0].startswith("Two-layer linear net: most runs are lazy up to eta·lambda0 = 1")
    write_outputs(outcome, tmp_path / "out")
    assert (tmp_path / "out" / "catapult_linear.png").stat().st_size > 10_000
    again = run("catapult", TINY, store=tmp_path / "s", progress=False)
    assert again.tasks_run == 0 and again.records == outcome.records


@pytest.mark.parametrize(
    ("assignment", "field", "allowed"),
    [
        ({"activations": ["tanh"]}, "activations[0]", "relu"),
        ({"rates": [0.0]}, "rates[0]", "> 0"),
        ({"curvature": "fisher"}, "curvature", "hessian"),
        ({"width": 0}, "width", ">= 1"),
        ({"curvature_tol": 1.0}, "curvature_tol", "< 1"),
    ],
)
def test_spec_errors_name_the_field(assignment, field, allowed):
    with pytest.raises(SpecError) as err:
        build(CatapultSpec, assignment)
    assert err.value.field == field and allowed in str(err.value)
