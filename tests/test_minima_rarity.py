"""``minima-rarity``: global-piece labels, the counts modulo permutations, the index-decay fit,
the summary of hand-built endpoints, and a tiny run that resumes."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import escapelab
from escapelab.config import build, to_dict
from escapelab.experiments.kits.teacher_student import TeacherSpec, build_teacher, student_arch
from escapelab.experiments.minima_rarity import MinimaRarity, RaritySpec
from escapelab.landscape.rarity import (
    _partitions,
    fit_index_decay,
    global_piece,
    hessian_index,
    orbit_size,
    piece_orbits,
)
from escapelab.landscape.symmetry import apply_permutation, apply_sign_flip
from escapelab.nets.mlp import Layer
from escapelab.report.findings import findings
from escapelab.theory.symmetry_counts import count_global_subspaces

TEACHER = TeacherSpec(d=2, width=2, seed=3)


def _student(units: list[tuple[torch.Tensor, float]]) -> tuple[object, torch.Tensor]:
    """A width-len(units) erf student from (incoming weight, output weight) pairs."""
    arch = student_arch(TEACHER, len(units), False)
    w = torch.stack([u for u, _ in units]).to(torch.float64)
    a = torch.tensor([[o for _, o in units]], dtype=torch.float64)
    return arch, arch.flatten([Layer(w, None), Layer(a, None)])


def _teacher_units() -> tuple[object, torch.Tensor, torch.Tensor, torch.Tensor]:
    t = build_teacher(TEACHER)
    hidden, out = t.arch.unflatten(t.theta)
    return t.arch, t.theta, hidden.weight, out.weight.reshape(-1)


def test_hessian_index_is_relative_to_the_spectrum() -> None:
    eigs = torch.tensor([-1.0, -1e-9, 0.0, 2.0], dtype=torch.float64)
    assert hessian_index(eigs, 1e-6) == 1
    assert hessian_index(eigs, 1e-12) == 2


def test_piece_labels_read_copies_and_cancelling_groups() -> None:
    t_arch, t_theta, v, c = _teacher_units()
    free = torch.tensor([0.3, -0.7], dtype=torch.float64)
    cases = {
        "copies=1.1": [(v[0], c[0]), (v[1], c[1])],
        "copies=2.1": [(v[0], 0.25 * c[0]), (v[1], c[1]), (v[0], 0.75 * c[0])],
        # a sign-flipped copy (erf is odd) counts as a copy
        "copies=1.2": [(v[0], c[0]), (-v[1], 2.0 * c[1]), (v[1], 3.0 * c[1])],
        "copies=1.1|cancel=1": [(v[0], c[0]), (free, 0.0), (v[1], c[1])],
        "copies=1.1|cancel=2": [(free, 1.5), (v[0], c[0]), (v[1], c[1]), (free, -1.5)],
        "copies=1.1|silent=1": [(v[0], c[0]), (torch.zeros(2), 4.0), (v[1], c[1])],
    }
    for label, units in cases.items():
        arch, theta = _student(units)
        assert global_piece(arch, theta, t_arch, t_theta) == label
        # invariant under every permutation of the student's units and a sign flip
        for perm in itertools.permutations(range(len(units))):
            moved = apply_permutation(arch, theta, 0, list(perm))
            assert global_piece(arch, moved, t_arch, t_theta) == label
        flipped = apply_sign_flip(arch, theta, 0, [0])
        assert global_piece(arch, flipped, t_arch, t_theta) == label
    # not a global piece: the copies' outputs do not sum to the teacher's, a teacher unit missing
    arch, theta = _student([(v[0], 0.5 * c[0]), (v[1], c[1])])
    assert global_piece(arch, theta, t_arch, t_theta).startswith("unresolved:")
    arch, theta = _student([(v[0], c[0]), (free, 1.0)])
    assert global_piece(arch, theta, t_arch, t_theta) == "unresolved:copies=1.0|cancel=1"


@pytest.mark.parametrize(("r_star", "m"), [(1, 1), (2, 3), (2, 5), (3, 6), (4, 7)])
def test_the_labels_modulo_permutations_cover_T_exactly(r_star: int, m: int) -> None:
    labels = 0
    total = 0
    for k in range(m - r_star + 1):
        for copies in itertools.product(range(1, m + 1), repeat=r_star):
            if sum(copies) != m - k:
                continue
            for cancel in _partitions(k):
                labels += 1
                total += orbit_size(copies, cancel)
    assert labels == piece_orbits(r_star, m)
    assert total == count_global_subspaces(r_star, m)
    assert piece_orbits(4, 3) == 0 and piece_orbits(4, 4) == 1 and piece_orbits(4, 5) == 5


def _synthetic(slope: float, teachers: int = 24, n: int = 150, seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    groups = []
    for t in range(teachers):
        for p in (10, 20, 30, 40, 50):
            groups.append((t, p, n, int(rng.binomial(n, math.exp(-0.3 + slope * p)))))
    return groups


def test_the_index_fit_recovers_a_known_slope() -> None:
    fit = fit_index_decay(_synthetic(-0.05), bootstrap=100, seed=0)
    assert fit.slope == pytest.approx(-0.05, abs=0.004)
    assert fit.slope_low < -0.05 < fit.slope_high < 0
    assert fit.intercept == pytest.approx(-0.3, abs=0.1)
    assert fit.verdict == "supported" and fit.gof_p > 0.01
    flat = fit_index_decay(_synthetic(0.0), bootstrap=100, seed=0)
    assert flat.slope_low < 0 < flat.slope_high
    assert flat.verdict == "not resolved: the slope's interval contains 0"
    # a rate that falls then rises is not log-linear
    bent = [(t, p, 400, 200 if p in (10, 50) else 20) for t in range(8) for p in (10, 30, 50)]
    assert fit_index_decay(bent, bootstrap=100).verdict.startswith("rejected")
    few = fit_index_decay([(0, 10, 5, 0), (0, 20, 5, 0), (0, 30, 5, 0)], bootstrap=10)
    assert few.verdict == "not resolved: index 0 seen at fewer than two parameter counts"
    # index 0 everywhere (bad minima found by training): no slope is identified
    ones = fit_index_decay([(t, p, 5, 5) for t in range(3) for p in (9, 12, 15)], bootstrap=10)
    assert ones.verdict.startswith("not resolved: every critical point has index 0")
    assert math.isnan(ones.slope) and math.isnan(ones.slope_low)


def _endpoint(teacher: int, member: int, kind: str, theta: torch.Tensor) -> dict:
    return {
        "teacher": teacher,
        "role": "endpoint",
        "width": 3,
        "member": member,
        "kind": kind,
        "loss": 0.0 if kind == "global_min" else 0.1,
        "n_negative": 0,
        "n_params": int(theta.numel()),
        "theta": theta.tolist(),
    }


def _on_piece(spec: RaritySpec, k: int, units: list[tuple[int | None, float]]) -> torch.Tensor:
    """A width-3 student of teacher k: (teacher unit copied or None for a free unit, output
    weight as a multiple of that unit's, or itself for a free unit)."""
    teacher = build_teacher(replace(spec.teacher, seed=spec.teacher.seed + k))
    hidden, out = teacher.arch.unflatten(teacher.theta)
    free = torch.tensor([0.3, -0.7], dtype=torch.float64)
    w = torch.stack([free if i is None else hidden.weight[i] for i, _ in units])
    a = [f if i is None else f * float(out.weight[0, i]) for i, f in units]
    arch = student_arch(spec.teacher, 3, False)
    return arch.flatten([Layer(w, None), Layer(torch.tensor([a], dtype=torch.float64), None)])


def test_hand_built_endpoints_give_the_right_counts_and_shares() -> None:
    spec = build(RaritySpec, {"teacher": {"width": 2, "seed": 0}, "teachers": 2, "bootstrap": 0})
    arch = student_arch(spec.teacher, 3, False)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, arch.n_params, generator=gen, dtype=torch.float64)
    a_moved = apply_sign_flip(arch, apply_permutation(arch, a, 0, [2, 0, 1]), 0, [1])
    records = [
        # teacher 0: a bad minimum reached twice (once permuted and flipped), another once
        _endpoint(0, 0, "local_min", a),
        _endpoint(0, 1, "local_min", a_moved),
        _endpoint(0, 2, "local_min", b),
        _endpoint(0, 3, "global_min", _on_piece(spec, 0, [(0, 0.4), (1, 1.0), (0, 0.6)])),
        # teacher 1: no bad minimum, two global pieces reached, one point not on a piece
        _endpoint(1, 0, "global_min", _on_piece(spec, 1, [(1, 1.0), (0, 2.0), (0, -1.0)])),
        _endpoint(1, 1, "global_min", _on_piece(spec, 1, [(1, 1.0), (None, 0.0), (0, 1.0)])),
        _endpoint(1, 2, "global_min", _on_piece(spec, 1, [(1, 1.0), (None, 0.0), (0, 0.5)])),
        _endpoint(1, 3, "not_converged", a),
    ]
    rows = MinimaRarity().summarize(spec, records)
    (width,) = [r for r in rows if r["role"] == "width"]
    assert (width["seeds"], width["bad_minima"], width["global_min"]) == (8, 3, 4)
    assert width["p_bad_min"] == pytest.approx(3 / 8)
    assert width["bad_ci_low"] < 3 / 8 < width["bad_ci_high"]
    assert width["distinct_bad_minima"] == 2 and width["teachers_with_bad"] == 1
    assert width["largest_bad_basin"] == pytest.approx(0.5)
    assert width["distinct_global_pieces"] == 3 and width["piece_labels"] == 2
    assert width["unresolved_global"] == 1
    assert width["bad_good_ratio"] == pytest.approx(2 / 3)
    assert (width["T"], width["piece_orbits"], width["G"]) == (12, 3, 1)
    teacher0 = next(r for r in rows if r["role"] == "teacher" and r["teacher"] == 0)
    assert sorted(teacher0["basin_shares"]) == pytest.approx([0.25, 0.5])
    (index,) = [r for r in rows if r["role"] == "index" and r["source"] == "endpoint"]
    assert (index["found"], index["index_zero"], index["n_params"]) == (3, 3, 9)


SMALL = {
    "teacher": {"width": 2, "seed": 1},
    "teachers": 2,
    "train": {"steps": 300, "refine_steps": 20, "certify_rounds": 2},
    "student": {"widths": [1, 2, 3], "seeds": 3},
    "search_starts": 1,
    "search_steps": 30,
    "n_probes": 64,
    "bootstrap": 20,
}


def test_a_tiny_run_keeps_its_invariants_and_resumes(tmp_path: Path) -> None:
    out = escapelab.run("minima-rarity", SMALL, store=tmp_path, progress=False)
    assert out.failures == ()
    widths = [r for r in out.summary if r["role"] == "width"]
    assert [r["width"] for r in widths] == [1, 2, 3]
    for r in widths:
        assert r["seeds"] == 6 and r["global_min"] + r["bad_minima"] <= 6
        assert r["bad_ci_low"] <= r["p_bad_min"] <= r["bad_ci_high"]
        assert r["distinct_bad_minima"] <= r["bad_minima"]
        assert r["distinct_global_pieces"] + r["unresolved_global"] <= r["global_min"]
        assert r["piece_labels"] <= r["distinct_global_pieces"]
    assert widths[0]["global_min"] == 0 and widths[0]["T"] == 0  # m = 1 < r* = 2
    found = [
        r for r in out.records if r["role"] == "critical" and r["loss"] >= out.spec.train.tol_global
    ]
    index = [r for r in out.summary if r["role"] == "index" and r["source"] == "search"]
    assert sum(r["found"] for r in index) == len(found)
    assert all(sum(r["index_counts"].values()) == r["found"] for r in index)
    assert {r["source"] for r in out.summary if r["role"] == "fit"} == {
        "search",
        "endpoint",
        "search_wide",
    }
    said = findings("minima-rarity", out.summary, to_dict(out.spec))
    assert said[0].startswith("Over 2 teachers, the share of students ending in a bad minimum")
    assert len(said) == 1 + 3 + 1 + 3  # the lead, one per width, the mean index, one per fit
    paths = MinimaRarity().figures(out.spec, out.records, tmp_path / "figures")
    assert [p.name for p in paths] == ["rarity_by_width.png", "rarity_index.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    again = escapelab.run("minima-rarity", SMALL, store=tmp_path, progress=False)
    assert again.tasks_run == 0 and len(again.records) == len(out.records)
    assert str(again.summary) == str(out.summary)  # nan != nan: compare the text
