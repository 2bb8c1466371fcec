"""Matrix sensing: the Gaussian sensing operator, the gradient and the duality-gap certificate,
GD's linear rate on a well-conditioned problem, ScaledGD(lambda)'s indifference to kappa, the
experiment end to end."""

from __future__ import annotations

import pytest
import torch

from escapelab.config import SpecError, build
from escapelab.experiments.matrix_sensing import (
    MatrixSensingSpec,
    initial_factors,
    make_problem,
    run_point,
    solve,
)
from escapelab.problems.matrix_sensing import (
    loss_and_dual,
    measure,
    optimality_gap_bound,
    sensing_problem,
)
from escapelab.report.findings import findings
from escapelab.runner.sweep import run, write_outputs

pytestmark = pytest.mark.usefixtures("single_thread")


def _problem(kappa=10.0, n=6, r_star=2, m=300, seeds=2):
    gens = [torch.Generator().manual_seed(i) for i in range(seeds)]
    return sensing_problem(n, r_star, kappa, m, gens)


def test_truth_has_the_condition_number_and_measurements_are_isometric_on_average():
    prob = _problem(kappa=100.0, m=4000, seeds=1)
    s = torch.linalg.eigvalsh(prob.m_star[0])
    assert s[-1] == pytest.approx(1.0) and s[-2] == pytest.approx(0.01)
    assert s[:-2].abs().max() < 1e-12
    m = torch.randn(1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    m = m + m.mT
    energy = measure(prob.a, m).square().mean()
    assert float(energy) == pytest.approx(float(torch.linalg.matrix_norm(m).square()), rel=0.05)


def test_gradient_is_2_s_x_and_the_loss_vanishes_at_the_truth():
    prob = _problem()
    x = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    f, s = loss_and_dual(prob, x)
    f.sum().backward()
    assert torch.allclose(x.grad, 2 * s.detach() @ x.detach(), atol=1e-12)
    evals, evecs = torch.linalg.eigh(prob.m_star)
    x_star = evecs[..., -2:] * evals[..., None, -2:].sqrt()
    assert loss_and_dual(prob, x_star)[0].max() < 1e-25


def test_gap_bound_is_an_upper_bound_on_the_loss_and_exact_form_for_psd_s():
    prob = _problem()
    trace = prob.m_star.diagonal(dim1=-2, dim2=-1).sum(-1)
    gen = torch.Generator().manual_seed(1)
    for scale in (0.01, 0.3, 1.0):
        x = scale * torch.randn(2, 6, 3, dtype=torch.float64, generator=gen)
        f, s = loss_and_dual(prob, x)
        assert (optimality_gap_bound(x, s, trace) >= f - 1e-15).all()  # f* = 0: noiseless
    # S = I is PSD: the bound is <S, X X^T> = |X|_F^2, whatever the trace bound
    x = torch.randn(1, 4, 2, dtype=torch.float64, generator=gen)
    bound = optimality_gap_bound(x, torch.eye(4, dtype=torch.float64)[None], torch.tensor([1e9]))
    assert float(bound) == pytest.approx(float(x.square().sum()))


def test_gd_converges_linearly_on_a_well_conditioned_problem():
    """kappa = 1, r = r* = 1: near the solution the error contracts each step by at most
    |1 - 2 eta s| (1 + delta) with eta s = 0.2 and delta the operator's deviation from an
    isometry (small with 600 measurements of a 6 x 6 matrix): below 0.75 per step."""
    spec = build(
        MatrixSensingSpec,
        {
            "n": 6,
            "r_star": 1,
            "measurements": 600,
            "rank": 1,
            "ranks": [1],
            "eps": 1e-10,
            "max_iters": 400,
            "record_every": 1,
            "seeds": 2,
        },
    )
    prob = make_problem(spec, 1.0, 0, 2)
    out = solve(spec, prob, initial_factors(spec, 1.0, 1, 0, 2), "gd")
    assert (out["iters"] > 0).all()
    for j in range(2):
        curve = torch.tensor(out["curve"][j])
        below = (curve < 1e-2).nonzero()[0, 0]
        tail = curve[below : int(out["iters"][j])]
        rate = float((tail[-1] / tail[0]) ** (1 / (len(tail) - 1)))
        assert 0.2 < rate < 0.75
        assert (tail[1:] < tail[:-1]).all()  # monotone: linear, not oscillating


def test_scaledgd_is_indifferent_to_kappa_where_gd_is_not():
    spec = build(
        MatrixSensingSpec,
        {
            "n": 8,
            "r_star": 2,
            "measurements": 400,
            "rank": 3,
            "ranks": [3],
            "eps": 1e-3,
            "max_iters": 300,
            "seeds": 2,
        },
    )
    iters = {}
    for kappa in (1.0, 1000.0):
        prob = make_problem(spec, kappa, 0, 2)
        x0 = initial_factors(spec, kappa, 3, 0, 2)
        for method in ("gd", "scaledgd", "precgd"):
            iters[method, kappa] = solve(spec, prob, x0, method)["iters"]
    assert (iters["gd", 1.0] > 0).all() and (iters["gd", 1000.0] == -1).all()
    for method in ("scaledgd", "precgd"):
        assert (iters[method, 1000.0] > 0).all()
        assert (iters[method, 1000.0] <= 2 * iters[method, 1.0]).all()


def test_a_seed_runs_as_it_would_alone():
    """Seeds stop at their own first iterate at eps: a seed batched with others gives the
    record it gives alone."""
    spec = build(MatrixSensingSpec, {**TINY, "seeds": 3})
    both = [r for r in run_point(spec, 100.0, 2, 0, 3) if r["member"] == 2]
    alone = run_point(spec, 100.0, 2, 2, 3)
    for a, b in zip(both, alone, strict=True):
        assert a["iters"] == b["iters"] and a["curve"] == pytest.approx(b["curve"], rel=1e-9)
        assert a["gap_bound"] == pytest.approx(b["gap_bound"], rel=1e-9)


TINY = {
    "n": 6,
    "r_star": 1,
    "measurements": 150,
    "kappas": [1, 100],
    "rank": 2,
    "ranks": [1, 2],
    "kappa_fixed": 1,
    "eps": 1e-3,
    "max_iters": 200,
    "seeds": 2,
}


def test_experiment_runs_summarizes_draws_and_resumes(tmp_path):
    outcome = run("matrix-sensing", TINY, store=tmp_path / "s", progress=False)
    assert outcome.tasks_run == 3 and len(outcome.records) == 3 * 3 * 2
    claims = {r["claim"]: r for r in outcome.summary if r["kind"] == "claim"}
    assert claims["ScaledGD(lambda)'s iterations grow at most logarithmically in kappa"]["holds"]
    assert "PrecGD's end points are certified globally optimal" in claims
    certified = [r for r in outcome.records if r["certified"]]
    assert all(r["gap_bound"] <= 1e-3 * 1.0 + 1e-15 for r in certified)  # |M*|_F = 1 (r* = 1)
    spec = {"rank": 2, "eps": 1e-3, "max_iters": 200}
    said = findings("matrix-sensing", outcome.summary, spec)
    assert said[0].startswith("Iterations to relative error 0.001 (r = 2): gd ")
    write_outputs(outcome, tmp_path / "out")
    assert (tmp_path / "out" / "matrix_sensing.png").stat().st_size > 10_000
    again = run("matrix-sensing", TINY, store=tmp_path / "s", progress=False)
    assert again.tasks_run == 0 and again.records == outcome.records


@pytest.mark.parametrize(
    ("assignment", "field", "allowed"),
    [
        ({"rank": 1}, "rank", ">= r_star"),
        ({"ranks": [2, 30]}, "ranks", "<= n"),
        ({"kappas": [0.5]}, "kappas[0]", ">= 1"),
        ({"methods": ["adam"]}, "methods[0]", "scaledgd"),
        ({"eps": 0}, "eps", "> 0"),
    ],
)
def test_spec_errors_name_the_field(assignment, field, allowed):
    with pytest.raises(SpecError) as err:
        build(MatrixSensingSpec, assignment)
    assert err.value.field == field and allowed in str(err.value)
