"""Oracles for the escape-dimension experiments: splitting, the B matrix, E2, E4 and E5."""

from __future__ import annotations

import math

import pytest
import torch

import escapelab
from escapelab.experiments.kits.teacher_student import (
    StudentSpec,
    TeacherSpec,
    TrainSpec,
    build_teacher,
    student_arch,
    train_and_classify,
    unit_subsets,
)
from escapelab.landscape.splitting import classify_b, predicts_saddle, splitting_matrix
from escapelab.nets.surgery import add_unit, select_units, split_unit
from escapelab.optim.refine import find_critical_points
from escapelab.problems.teacher import student_objective
from escapelab.seeding import derive_seed

# the splitting and escape mechanics are checked at uncertified endpoints (certification, the
# experiments' default, is tested in test_certify.py and costs minutes here)
TEACHER, TRAIN = TeacherSpec(), TrainSpec(steps=2500, refine_steps=80, certify_rounds=0)
CPU = torch.device("cpu")


def problem(arch: escapelab.Architecture) -> escapelab.Objective:
    """The default teacher's exact population loss for students ``arch``."""
    return student_objective(build_teacher(TEACHER), arch, None, 0, TRAIN.dtype, CPU)


@pytest.fixture(scope="module")
def bad_minimum() -> tuple:
    """A bad local minimum of the default teacher at width r* = 4 (population loss)."""
    arch = student_arch(TEACHER, 4, False)
    objective = problem(arch)
    theta0 = arch.init(6, derive_seed("student", StudentSpec().seed, 4), dtype=TRAIN.dtype)
    result, endpoints = train_and_classify(objective, theta0, TRAIN)
    i = next(k for k, ep in enumerate(endpoints) if ep.kind == "local_min")
    return arch, objective, result.theta[i], endpoints[i]


def test_splitting_keeps_loss_and_zero_gradient(bad_minimum) -> None:
    arch, _, theta, endpoint = bad_minimum
    assert endpoint.grad_norm < 1e-10
    for gamma in (-0.5, 0.0, 0.3, 1.0, 1.7):
        for unit in range(4):
            wide, point = split_unit(arch, theta, unit, gamma)
            wide_obj = problem(wide)
            loss, grad = wide_obj.loss_and_grad(point[None])
            assert abs(float(loss[0]) - endpoint.loss) < 1e-12
            # the split gradient is the source gradient re-weighted by gamma and 1 - gamma
            bound = endpoint.grad_norm * max(1.0, abs(gamma), abs(1 - gamma)) * 2
            assert float(grad.norm()) <= bound + 1e-12


def test_b_matrix_predicts_the_sign_along_gamma(bad_minimum) -> None:
    arch, objective, theta, _ = bad_minimum
    checked = 0
    for unit in range(4):
        b_class = classify_b(torch.linalg.eigvalsh(splitting_matrix(objective, theta, unit)))
        for gamma in (-0.5, 0.25, 0.75, 1.5):
            wide, point = split_unit(arch, theta, unit, gamma)
            wide_obj = problem(wide)
            eigs = torch.linalg.eigvalsh(wide_obj.hessian(point[None]))[0]
            saddle = bool(eigs[0] < -1e-6 * eigs[-1])
            predicted = predicts_saddle(b_class, gamma)
            if predicted is not None:
                assert predicted == saddle, (unit, gamma, b_class, float(eigs[0]))
                checked += 1
    assert checked >= 8


def test_b_matrix_population_matches_a_large_sample(bad_minimum) -> None:
    arch, objective, theta, _ = bad_minimum
    sample = student_objective(build_teacher(TEACHER), arch, 400_000, seed=11)
    exact = splitting_matrix(objective, theta, 0)
    estimate = splitting_matrix(sample, theta, 0)
    assert torch.allclose(exact, estimate, atol=5e-4 * float(exact.abs().max()) + 2e-4)


def test_surgery_preserves_the_function() -> None:
    arch = escapelab.Architecture(3, (4,), 2, "tanh", bias=True, output_bias=True)
    theta = arch.init(3, seed=2, scheme="normal")
    x = torch.randn(25, 3, dtype=torch.float64)
    for wide, point in (
        split_unit(arch, theta, 1, 0.3),
        add_unit(arch, theta, torch.ones(3, dtype=torch.float64), 0.5),
    ):
        assert wide.widths == (5,)
        torch.testing.assert_close(wide.forward(point, x), arch.forward(theta, x))
    sub, sub_theta = select_units(arch, theta, [0, 3])
    layers, sub_layers = arch.unflatten(theta), sub.unflatten(sub_theta)
    assert torch.equal(sub_layers[0].weight, layers[0].weight[:, [0, 3]])
    assert torch.equal(sub_layers[1].weight, layers[1].weight[..., [0, 3]])


def test_unit_subsets_all_or_sampled() -> None:
    subsets, sampled = unit_subsets(6, 4, 100, seed=0)
    assert not sampled and len(subsets) == math.comb(6, 4) == len(set(subsets))
    subsets, sampled = unit_subsets(12, 4, 30, seed=0)
    assert sampled and len(subsets) == 30 == len(set(subsets))
    assert subsets == unit_subsets(12, 4, 30, seed=0)[0]


def test_critical_point_search_finds_a_saddle() -> None:
    # theta = 0 of a bias-free odd network is a critical point with negative curvature
    teacher = escapelab.make_teacher(2, 2, "erf", "orthonormal", "signs", seed=1)
    arch = escapelab.Architecture(2, (2,), 1, "erf", bias=False)
    objective = student_objective(teacher, arch, None)
    gen = torch.Generator().manual_seed(0)
    starts = 1e-3 * torch.randn(4, arch.n_params, generator=gen, dtype=torch.float64)
    found, gnorm = find_critical_points(objective, starts, steps=60, tol_grad=1e-12)
    assert bool((gnorm <= 1e-12).all())
    eigs = torch.linalg.eigvalsh(objective.hessian(found))
    assert bool((eigs[:, 0] < -1e-3).all())


def test_escape_run_turns_a_bad_minimum_into_a_saddle(tmp_path) -> None:
    spec = {
        "teachers": 1,
        "student": {"seeds": 6},
        "train": {"steps": 2500, "refine_steps": 80, "certify_rounds": 0},
        "gammas": [-0.5, 0.5],
        "n_random": 1,
        "max_minima": 2,
    }
    out = escapelab.run("escape", spec, store=tmp_path, progress=False)
    runs = [r for r in out.records if r["role"] == "embedded"]
    assert runs, "the default teacher has bad minima at width 4"
    assert any(r["embedded_n_negative"] > 0 for r in runs)
    assert any(r["escaped"] for r in runs)
    for r in runs:
        assert abs(r["embedded_loss"] - r["source_loss"]) < 1e-12
    rows = [row for row in out.summary if row["embedding"] == "split"]
    assert all(row["b_agrees"] == 1.0 for row in rows if not math.isnan(row["b_agrees"]))


def test_subnetwork_table_counts(tmp_path) -> None:
    spec = {
        "teachers": 1,
        "student": {"widths": [6], "seeds": 4},
        "train": {"steps": 1500, "certify_rounds": 1},
    }
    out = escapelab.run("subnetworks", spec, store=tmp_path, progress=False)
    (row,) = out.summary
    cells = (
        "success_with_ticket",
        "success_without_ticket",
        "failure_with_ticket",
        "failure_without_ticket",
    )
    assert sum(row[c] for c in cells) == row["n"] == 4
    assert row["subsets_per_member"] == math.comb(6, 5) and not row["subsets_sampled"]
    for rec in out.records:
        assert rec["n_winning"] == len(rec["winning_subsets"]) <= 6
        assert len(rec["subset_losses"]) == 6


def test_subnetworks_refuse_narrow_students() -> None:
    with pytest.raises(escapelab.SpecError, match=r"exceed teacher\.width"):
        escapelab.run("subnetworks", {"student": {"widths": [5, 6]}}, progress=False)


def test_census_counts(tmp_path) -> None:
    spec = {
        "teachers": 1,
        "student": {"widths": [3], "seeds": 6},
        "train": {"steps": 2000, "certify_rounds": 1},
        "search_starts": 1,
    }
    out = escapelab.run("minima-census", spec, store=tmp_path, progress=False)
    (row,) = out.summary
    assert row["global_min"] == 0, "width 3 < r* = 4 cannot reach zero loss"
    assert 1 <= row["distinct_bad_minima"] <= row["bad_minima"]
    assert sum(row["basin_shares"]) == pytest.approx(row["bad_minima"] / row["seeds"])
    assert sum(row["index_counts"].values()) == row["critical_points_found"]
    # every endpoint is counted once: global, bad minimum, out of budget, or another kind
    kinds = [r["kind"] for r in out.records if r["role"] == "endpoint"]
    assert row["not_converged"] == kinds.count("not_converged")
    endpoints = ("global_min", "bad_minima", "not_converged", "other_endpoints")
    assert sum(row[k] for k in endpoints) == row["seeds"] == 6


def test_escape_table_counts_sources_out_of_budget() -> None:
    from escapelab.experiments.escape import escape_table

    sources = [
        {"role": "source", "width": 4, "member": i, "kind": k}
        for i, k in enumerate(["local_min", "not_converged", "not_converged", "global_min"])
    ]
    (row,) = escape_table(sources)
    assert (row["bad_minima"], row["sources_not_converged"], row["runs"]) == (1, 2, 0)
