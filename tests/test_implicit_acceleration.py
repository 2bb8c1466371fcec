"""Implicit acceleration by depth: the l_p problems and their optima, balanced factors, the
end-to-end update rule against real factor steps, GD's rate on l2, the experiment end to end."""

from __future__ import annotations

import itertools

import pytest
import torch

from escapelab.config import SpecError, build
from escapelab.experiments.implicit_acceleration import ImplicitAccelerationSpec, train_method
from escapelab.problems.lp_regression import lp_grad, lp_loss, lp_problem
from escapelab.report.findings import findings
from escapelab.runner.sweep import run, write_outputs
from escapelab.theory.end_to_end import balanced_factors, end_to_end, end_to_end_preconditioned

pytestmark = pytest.mark.usefixtures("single_thread")


def _problem(p: float, dataset: str = "synthetic"):
    return lp_problem(dataset, p, [1, 2], samples=80, dim=5, noise=0.3, condition=10.0)


@pytest.mark.parametrize("p", [2.0, 4.0])
def test_optimum_has_zero_gradient_and_matches_least_squares(p):
    prob = _problem(p)
    assert lp_grad(prob.x, prob.y, prob.w_opt, p).abs().max() < 1e-10
    ls = torch.linalg.lstsq(prob.x, prob.y[..., None]).solution[..., 0]
    if p == 2:
        assert torch.allclose(prob.w_opt, ls, atol=1e-12)
    else:  # the l4 optimum is another point, with a lower l4 loss than least squares
        assert (lp_loss(prob.x, prob.y, ls, p) > prob.loss_opt + 1e-6).all()


def test_gradient_is_autograd_of_the_loss():
    prob = _problem(4.0)
    w = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    lp_loss(prob.x, prob.y, w, 4.0).sum().backward()
    assert torch.allclose(w.grad, lp_grad(prob.x, prob.y, w.detach(), 4.0), atol=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_balanced_factors_multiply_to_w_and_are_balanced(depth):
    w = torch.randn(4, 6, dtype=torch.float64)
    fs = balanced_factors(w, depth, 7, torch.Generator().manual_seed(0))
    assert torch.allclose(end_to_end(fs), w, atol=1e-12)
    for a, b in itertools.pairwise(fs):
        assert torch.allclose(b.mT @ b, a @ a.mT, atol=1e-12)


@pytest.mark.parametrize("depth", [2, 3])
def test_end_to_end_rule_matches_a_gd_step_on_balanced_factors(depth):
    """One GD step on exactly balanced factors moves w_e by -eta P(w_e) grad L up to O(eta^2):
    the relative deviation is tiny and falls tenfold with a tenfold smaller eta."""
    prob = _problem(4.0)
    w = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    deviations = []
    for eta in (1e-4, 1e-5):
        fs = [f.requires_grad_(True) for f in balanced_factors(w, depth, 4, torch.Generator())]
        lp_loss(prob.x, prob.y, end_to_end(fs), 4.0).sum().backward()
        with torch.no_grad():
            moved = end_to_end([f - eta * f.grad for f in fs]) - w
        rule = -eta * end_to_end_preconditioned(w, lp_grad(prob.x, prob.y, w, 4.0), depth)
        deviations.append(float((moved - rule).norm() / rule.norm()))
    assert deviations[0] < 1e-2
    assert deviations[1] == pytest.approx(deviations[0] / 10, rel=0.1)


def test_preconditioner_closed_form_for_depth_one_and_along_w():
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    g = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert torch.equal(end_to_end_preconditioned(w, g, 1), g)
    # depth 2: |w| (g + (u.g) u) with |w| = 5, u = (0.6, 0.8)
    expect = 5 * (g + 0.6 * torch.tensor([[0.6, 0.8]], dtype=torch.float64))
    assert torch.allclose(end_to_end_preconditioned(w, g, 2), expect)


def test_gd_on_l2_converges_at_the_quadratic_rate_and_members_train_alone():
    """GD on least squares, in the eigenbasis (h_i, v_i) of X^T X / m: the relative excess after
    t steps is sum_i h_i c_i^2 (1 - eta h_i)^(2t) / sum_i h_i c_i^2 with c = V^T (w_0 - w*),
    below q^(2t), q = max_i |1 - eta h_i|; a learning rate trained beside another trains as
    alone (to rounding)."""
    prob = _problem(2.0)
    w0 = torch.zeros(2, 5, dtype=torch.float64) + 0.1
    steps, eta = 40, 0.3
    both = train_method(prob, "gd", [0.05, eta], w0, None, steps, 1e-9)
    alone = train_method(prob, "gd", [eta], w0, None, steps, 1e-9)
    # equal to rounding: BLAS may block a batch of 2 differently from a batch of 1 (bitwise
    # equal on some CPUs, 5e-17 apart on an AMD EPYC)
    torch.testing.assert_close(both["final"][1], alone["final"][0], rtol=1e-10, atol=0.0)
    h, v = torch.linalg.eigh(prob.x.mT @ prob.x / prob.x.shape[1])
    c = torch.einsum("sdi,sd->si", v, w0 - prob.w_opt)
    exact = (h * c**2 * (1 - eta * h) ** (2 * steps)).sum(-1) / (h * c**2).sum(-1)
    assert torch.allclose(alone["final"][0], exact, rtol=1e-8)
    q = (1 - eta * h).abs().amax(-1)
    assert (alone["final"][0] <= q ** (2 * steps)).all()


SMALL = {
    "datasets": ["diabetes"],
    "methods": ["gd", "adagrad", "depth2"],
    "lrs": [0.1, 0.3, 0.5],
    "steps": 60,
    "eps": 0.05,
    "seeds": 2,
}


def test_experiment_runs_summarizes_draws_and_resumes(tmp_path):
    outcome = run("implicit-acceleration", SMALL, store=tmp_path / "s", progress=False)
    assert outcome.tasks_run == 6 and len(outcome.records) == 6 * 3 * 2
    best = {(r["p"], r["method"]): r for r in outcome.summary if r["kind"] == "best"}
    assert set(best) == {(p, m) for p in (2.0, 4.0) for m in SMALL["methods"]}
    assert all(r["best_lr"] in SMALL["lrs"] for r in best.values())
    claims = {r["claim"]: r for r in outcome.summary if r["kind"] == "claim"}
    assert claims["end-to-end update rule matches the factors (l4 loss)"]["measured"] < 0.05
    speedup = claims["depth accelerates GD (l4 loss)"]["measured"]
    assert speedup == pytest.approx(
        best[(4.0, "gd")]["iters_median"] / best[(4.0, "depth2")]["iters_median"]
    )
    said = findings("implicit-acceleration", outcome.summary, {"steps": 60, "eps": 0.05})
    assert said[0].startswith("On diabetes with the l2 loss, depth2 reaches")
    write_outputs(outcome, tmp_path / "out")
    assert (tmp_path / "out" / "implicit_acceleration_diabetes.png").stat().st_size > 10_000
    again = run("implicit-acceleration", SMALL, store=tmp_path / "s", progress=False)
    assert again.tasks_run == 0 and again.records == outcome.records


@pytest.mark.parametrize(
    ("assignment", "field", "allowed"),
    [
        ({"ps": [1.5]}, "ps[0]", ">= 2"),
        ({"methods": ["sgd"]}, "methods[0]", "adagrad"),
        ({"methods": ["gd", "gd"]}, "methods", "at most once"),
        ({"lrs": [0.0]}, "lrs[0]", "> 0"),
        ({"eps": 1.0}, "eps", "< 1"),
        ({"datasets": ["boston"]}, "datasets[0]", "diabetes"),
        ({"synthetic": {"condition": 0.5}}, "synthetic.condition", ">= 1"),
    ],
)
def test_spec_errors_name_the_field(assignment, field, allowed):
    with pytest.raises(SpecError) as err:
        build(ImplicitAccelerationSpec, assignment)
    assert err.value.field == field and allowed in str(err.value)
