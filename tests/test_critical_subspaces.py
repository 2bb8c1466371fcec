"""Which embeddings of certified critical points stay critical: the check behind the counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from escapelab.cli import main
from escapelab.config import SpecError
from escapelab.landscape.critical_subspaces import (
    CONSTRUCTIONS,
    TOL_VERIFIED,
    check_constructions,
    check_teacher,
    construction_verdicts,
    embed,
    max_gradient,
    teacher_point,
)
from escapelab.nets.mlp import Architecture
from escapelab.report.counts import write_count_check
from escapelab.report.findings import count_check_findings

# constructions that stay critical at a critical point of non-zero loss, for erf
CRITICAL_EVERYWHERE = {"duplicate", "zero_unit", "sign_flip"}


@pytest.fixture(scope="module")
def erf_rows() -> list[dict[str, Any]]:
    """One erf teacher (d = 2, r* = 2): itself and two certified width-1 students."""
    return check_constructions("erf", d=2, r_star=2, teachers=1, samples=3, students=2)


def test_points_are_certified_and_of_both_kinds(erf_rows: list[dict[str, Any]]) -> None:
    kinds = {row["kind"] for row in erf_rows}
    assert kinds == {"global", "non-global"}
    for row in erf_rows:
        assert row["base_grad"] <= TOL_VERIFIED
        if row["kind"] == "global":
            assert row["loss"] <= 1e-14 and (row["r"], row["m"]) in ((2, 3), (2, 4))
        else:
            assert row["loss"] > 1e-3 and (row["r"], row["m"]) in ((1, 2), (1, 3))


def test_verified_and_refuted_constructions(erf_rows: list[dict[str, Any]]) -> None:
    for row in erf_rows:
        critical = row["kind"] == "global" or row["construction"] in CRITICAL_EVERYWHERE
        if critical:
            assert row["max_grad"] <= TOL_VERIFIED and row["verified"], row
        else:  # zero_output, zero_input, cancelling_group at loss > 0: clearly not critical
            assert row["max_grad"] > 1e-6 and not row["verified"], row
    verdicts = {(v["construction"], v["kind"]): v for v in construction_verdicts(erf_rows)}
    assert verdicts["duplicate", "non-global"]["verdict"] == "verified"
    assert verdicts["zero_output", "non-global"]["verdict"] == "refuted"
    assert verdicts["zero_output", "global"]["verdict"] == "verified"
    assert verdicts["cancelling_group", "global"]["cases"] == 1  # only at m = r + 2
    assert {c for c, _ in verdicts} == set(CONSTRUCTIONS)


def test_findings_and_table(erf_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    verdicts = construction_verdicts(erf_rows)
    (sentence,) = count_check_findings(verdicts)
    assert sentence.startswith(f"erf, {len(erf_rows)} embedded subspaces: at global points ")
    assert "and zero_output, zero_input, cancelling_group do not" in sentence
    path = write_count_check(erf_rows, verdicts, tmp_path / "out")
    lines = path.read_text().splitlines()
    assert lines[0] == sentence
    assert sum(line.startswith("| ") for line in lines) == 2 + len(verdicts) + len(erf_rows)


def _forward(weights: torch.Tensor, outputs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    arch = Architecture(x.shape[1], (weights.shape[0],), 1, "erf", bias=False, output_bias=False)
    theta = torch.cat([weights.reshape(-1), outputs])
    return arch.forward(theta, x)


def test_embeddings_keep_the_function_of_an_odd_network() -> None:
    """For erf (odd, erf(0) = 0) every construction leaves the network's function unchanged,
    and the duplicate splits reach outside [0, 1]."""
    point = teacher_point(check_teacher("erf", 3, 3, seed=4))
    x = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    before = _forward(point.weights, point.outputs, x)
    gen = torch.Generator().manual_seed(1)
    factors = []
    for name in CONSTRUCTIONS:
        for _ in range(4):
            w, a = embed(point, 6, name, gen)
            assert w.shape == (6, 3) and a.shape == (6,)
            torch.testing.assert_close(_forward(w, a, x), before, rtol=0, atol=1e-12)
            if name == "duplicate":
                for i in range(3):
                    copies = (w == point.weights[i]).all(1)
                    factors += (a[copies] / point.outputs[i]).tolist()
    assert min(factors) < 0.0 and max(factors) > 1.0


def test_sign_flips_are_not_critical_for_relu() -> None:
    teacher = check_teacher("relu", 3, 3, seed=0)
    point = teacher_point(teacher)
    assert point.grad_inf <= TOL_VERIFIED
    assert max_gradient(teacher, point, 4, "sign_flip", samples=3, seed=0) > 1e-3
    assert max_gradient(teacher, point, 4, "duplicate", samples=3, seed=0) <= TOL_VERIFIED


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"activation": "tanh"}, "activation"),
        ({"d": 0}, "d"),
        ({"r_star": 1}, "r_star"),
        ({"teachers": True}, "teachers"),
        ({"samples": 0}, "samples"),
        ({"constructions": ["mirror"]}, "constructions"),
        ({"constructions": []}, "constructions"),
    ],
)
def test_bad_inputs_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        check_constructions(**kwargs)
    assert err.value.field == field


def test_embed_needs_room() -> None:
    point = teacher_point(check_teacher("erf", 2, 2, seed=0))
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(SpecError, match="m: cancelling_group needs m >= r \\+ 2"):
        embed(point, 3, "cancelling_group", gen)
    with pytest.raises(SpecError, match="m: duplicate needs m >= r \\+ 1"):
        embed(point, 2, "duplicate", gen)


def test_cli_verify(
    erf_rows: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``counts --verify`` prints the verdicts and writes count_check.md (the measurement is
    the fixture's, so the command stays fast; its arguments are checked)."""
    import escapelab.landscape.critical_subspaces as module

    calls = []

    def measured(activation: str, teachers: int, progress: bool) -> list[dict[str, Any]]:
        calls.append((activation, teachers))
        return erf_rows

    monkeypatch.setattr(module, "check_constructions", measured)
    args = ["counts", "--r-star", "3", "--max-width", "5", "--verify", "--verify-teachers", "3"]
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == [("erf", 3)]
    assert "| duplicate | erf | non-global |" in result.output
    assert "zero_output, zero_input, cancelling_group do not" in result.output
    assert (tmp_path / "count_check.md").read_text().startswith("erf, ")
