"""The ``scaling`` experiment: its spec, the problem search, the adaptive stages the runner grows
(on stand-in records, so every count is known in advance) and one real task of each kind."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import escapelab
from escapelab.config import SpecError, build, to_dict
from escapelab.experiments.base import Task
from escapelab.experiments.scaling import (
    Problem,
    Scaling,
    ScalingSpec,
    choose,
    next_block,
    problems,
    stop_reason,
    tally,
)
from escapelab.report.findings import findings
from escapelab.report.verdict import multistart_scaling

SMALL = {
    "family": {
        "activations": ["erf"],
        "r_stars": [2],
        "ds": [2],
        "incoming": ["gaussian"],
        "teachers": 2,
    },
    "search": {"seeds": 12, "problems": 1, "low": 0.2, "high": 0.5},
    "widths": {"factor": 2, "min_failures": 3, "max_seeds": 48, "target_upper": 0.01},
    "subnetworks": {"seeds": 4, "max_subsets": 3},
    "seeds_per_task": 16,
}


def _fails(teacher: int, r_star: int, m: int, member: int) -> bool:
    """Stand-in outcomes: at m = r* teacher 0 fails every 3rd seed (q0 = 1/3, in the band),
    teacher 1 every 2nd (1/2, in the band but farther from the middle on the logit scale...
    equal distance is avoided: 1/2 is the middle, so teacher 1 is chosen); wider students
    fail every (16, 24, ...)-th seed."""
    if m == r_star:
        return member % (3 if teacher == 0 else 2) == 0
    return member % (8 * (m - r_star + 1)) == 0


def _fake_run_task(self, spec, task: Task, device) -> list[dict]:
    q = task.params
    p = Problem(q["activation"], q["r_star"], q["d"], q["incoming"], q["teacher"])
    head = {"problem": p.label, **p.params(), "width": q["m"]}
    if q["stage"] == "subnetworks":
        return [
            {
                **head,
                "role": "subnetworks",
                "member": i,
                "n_subsets": 3,
                "sampled": False,
                "n_winning": i % 2,
            }
            for i in range(q["lo"], q["hi"])
        ]
    return [
        {
            **head,
            "role": "student",
            "member": i,
            "kind": "local_min" if _fails(p.teacher, p.r_star, q["m"], i) else "global_min",
        }
        for i in range(q["lo"], q["hi"])
    ]


def test_the_default_family_and_its_problems() -> None:
    spec = build(ScalingSpec, {})
    labels = [p.label for p in problems(spec)]
    # 2 activations x (r*=3: d=2 g, d=4 g, d=4 o; r*=4 likewise) x 1 teacher
    assert len(labels) == 12
    assert len(problems(build(ScalingSpec, {"family": {"teachers": 2}}))) == 24
    assert "erf-r3-d2-orthonormal-t0" not in labels  # orthonormal needs r* <= d
    assert "relu-r4-d4-orthonormal-t0" in labels


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"search": {"low": 0.6, "high": 0.5}}, "search.low"),
        ({"family": {"activations": ["tanh"]}}, "family.activations"),
        ({"family": {"activations": ["erf", "erf"]}}, "family.activations"),
        ({"failures": []}, "failures"),
        ({"subnetworks": {"seeds": 100}}, "subnetworks.seeds"),
        ({"widths": {"max_seeds": 10}}, "widths.max_seeds"),
        ({"family": {"ds": [2], "r_stars": [3], "incoming": ["orthonormal"]}}, "family.incoming"),
        ({"widths": {"factor": 1}}, "widths.factor"),
    ],
)
def test_bad_specs_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        build(ScalingSpec, data)
    assert err.value.field == field


def test_tanh_is_allowed_on_samples() -> None:
    spec = build(ScalingSpec, {"family": {"activations": ["tanh"]}, "n_samples": 256})
    assert problems(spec)[0].activation == "tanh"


def _students(label: str, m: int, kinds: list[str]) -> list[dict]:
    return [
        {"role": "student", "problem": label, "width": m, "member": i, "kind": k}
        for i, k in enumerate(kinds)
    ]


def test_tally_leaves_out_what_is_not_certified() -> None:
    spec = build(ScalingSpec, {})
    kinds = ["global_min"] * 5 + [
        "local_min",
        "saddle",
        "flat_channel",
        "not_converged",
        "diverged",
    ]
    t = tally(spec, _students("x", 3, kinds))
    assert (t.seeds, t.certified, t.failures, t.bad_min) == (10, 8, 3, 1)
    narrow = build(ScalingSpec, {"failures": ["local_min"]})
    assert tally(narrow, _students("x", 3, kinds)).failures == 1


def test_the_next_block_and_the_stops() -> None:
    spec = build(ScalingSpec, {"widths": {"max_seeds": 4096, "target_upper": 1e-3}})
    one_in_32 = tally(spec, _students("x", 5, ["local_min"] * 4 + ["global_min"] * 124))
    assert stop_reason(spec, one_in_32) is None
    assert next_block(spec, one_in_32) == math.ceil(1.1 * 20 * 32)  # 20 failures expected
    rare = tally(spec, _students("x", 5, ["local_min"] + ["global_min"] * 127))
    assert next_block(spec, rare) == 8 * 128  # at most eight times the seeds it has
    none = tally(spec, _students("x", 5, ["global_min"] * 64))
    assert next_block(spec, none) == 256  # no failure yet: four times as many
    assert stop_reason(spec, tally(spec, _students("x", 5, ["local_min"] * 20))) == "20 failures"
    clean = tally(spec, _students("x", 5, ["global_min"] * 4000))  # Wilson upper 9.6e-4
    assert stop_reason(spec, clean) == "upper bound < 0.001"
    small = build(ScalingSpec, {"widths": {"max_seeds": 64}})
    assert stop_reason(small, none) == "budget"


def test_choose_prefers_other_activations_then_the_middle() -> None:
    spec = build(ScalingSpec, {"search": {"problems": 2, "seeds": 64}})
    rates = {
        "erf-r3-d2-gaussian-t0": 0.5,
        "erf-r4-d2-gaussian-t0": 0.45,
        "relu-r3-d2-gaussian-t0": 0.8,
        "relu-r4-d4-gaussian-t0": 0.95,
    }
    records = []
    for label, q in rates.items():
        r = int(label.split("-")[1][1:])
        failed = round(q * 64)
        records += _students(label, r, ["local_min"] * failed + ["global_min"] * (64 - failed))
    chosen = [p.label for p in choose(spec, records)]
    # the erf problem nearest 1/2 first, then relu (0.95 is outside the band)
    assert chosen == ["erf-r3-d2-gaussian-t0", "relu-r3-d2-gaussian-t0"]


def test_the_runner_grows_the_stages_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Scaling, "run_task", _fake_run_task)
    out = escapelab.run("scaling", SMALL, store=tmp_path, progress=False)
    width = {r["width"]: r for r in out.summary if r["role"] == "width"}
    search = [r for r in out.summary if r["role"] == "search"]
    assert [r["chosen"] for r in search] == [False, True]  # q0 = 1/2 is nearest the middle
    # m = 2: 6 of 12 fail -> stop; m = 3: 1 in 16 -> 12 seeds, then 40 (3 failures expected)
    assert (width[2]["seeds"], width[2]["failures"], width[2]["stop"]) == (12, 6, "3 failures")
    assert (width[3]["seeds"], width[3]["failures"], width[3]["stop"]) == (40, 3, "3 failures")
    # m = 4: 1 in 24 -> 12, 40 (2 failures), then 80 capped at the budget of 48
    assert (width[4]["seeds"], width[4]["failures"], width[4]["stop"]) == (48, 2, "budget")
    # E2 on the first 4 seeds: winning sub-networks for odd seeds; seed 0 failed at m = 3, 4
    assert width[3]["e2_n"] == 4 and width[3]["no_ticket_but_succeeded"] == pytest.approx(0.25)
    assert width[3]["ticket_but_failed"] == 0.0
    laws = {r["law"]: r for r in out.summary if r["role"] == "law"}
    assert set(laws) == {"lottery_subsets", "lottery_disjoint", "lottery_fitted", "escape", "free"}
    assert min(r["delta_aic"] for r in laws.values()) == 0.0
    said = findings("scaling", out.summary, to_dict(out.spec))
    assert said[0].startswith(
        "On erf-r2-d2-gaussian-t1, P(fail) falls from 0.50 [0.25, 0.75] at m = 2 to "
        "0.04 [0.01, 0.14] at m = 4 (2 failures in 48); by AIC the best law is"
    )
    assert said[1].endswith("at m = 4: those rates are less resolved.")
    # E2 at m = 3 and 4: seeds 1 and 3 had a winning sub-network, seed 0 failed without one
    assert said[2] == (
        "On erf-r2-d2-gaussian-t1, of 8 students checked for winning width-r* sub-networks, "
        "0 failed although one existed (0.00 [0.00, 0.32]) and 2 succeeded although none did "
        "(0.25 [0.07, 0.59])."
    )
    paths = Scaling().figures(out.spec, out.records, tmp_path / "figures")
    assert [p.name for p in paths] == [
        "scaling_search.png",
        "scaling_rates.png",
        "scaling_residuals.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    again = escapelab.run("scaling", SMALL, store=tmp_path, progress=False)
    assert again.tasks_run == 0 and len(again.records) == len(out.records)


def test_a_failed_task_stops_the_stages_and_a_rerun_finishes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}

    def flaky(self, spec, task, device):
        if "m=0003" in task.key and calls["n"] == 0:
            calls["n"] += 1
            raise RuntimeError("boom")
        return _fake_run_task(self, spec, task, device)

    monkeypatch.setattr(Scaling, "run_task", flaky)
    first = escapelab.run("scaling", SMALL, store=tmp_path / "a", progress=False)
    assert len(first.failures) == 1
    # no stage after the one with the failure: m = 3 and m = 4 hold at most their first block
    seeds = {r["width"]: r["seeds"] for r in first.summary if r["role"] == "width"}
    assert seeds.get(3, 0) == 0 and seeds[4] == 12
    resumed = escapelab.run("scaling", SMALL, store=tmp_path / "a", progress=False)
    whole = escapelab.run("scaling", SMALL, store=tmp_path / "b", progress=False)
    strip = [{k: v for k, v in r.items() if k != "task"} for r in resumed.records]
    assert sorted(map(str, strip)) == sorted(
        map(str, ({k: v for k, v in r.items() if k != "task"} for r in whole.records))
    )
    assert resumed.failures == () and resumed.tasks_run > 0


def test_real_tasks_of_both_kinds() -> None:
    spec = build(ScalingSpec, {**SMALL, "train": {"steps": 300, "certify_rounds": 1}})
    exp, cpu = Scaling(), torch.device("cpu")
    params = {
        "activation": "erf",
        "r_star": 2,
        "d": 2,
        "incoming": "gaussian",
        "teacher": 0,
        "m": 3,
        "lo": 1,
        "hi": 3,
    }
    students = exp.run_task(spec, Task("s", {**params, "stage": "student"}), cpu)
    assert [r["member"] for r in students] == [1, 2]
    assert all(r["role"] == "student" and r["kind"] for r in students)
    subs = exp.run_task(spec, Task("e", {**params, "stage": "subnetworks"}), cpu)
    # m = 3, r* = 2: all C(3, 2) = 3 sub-networks, not a sample
    assert [(r["n_subsets"], r["sampled"]) for r in subs] == [(3, False)] * 2
    assert all(0 <= r["n_winning"] <= 3 for r in subs)


def _law_rows(gap: float) -> list[dict]:
    aics = {"lottery_subsets": 10 + gap, "lottery_disjoint": 500.0, "escape": 10.0, "free": 14.0}
    k = {"lottery_subsets": 0, "lottery_disjoint": 0, "escape": 1, "free": 6}
    return [
        {"role": "law", "problem": "p", "law": law, "aic": a, "k": k[law], "delta_aic": a - 10}
        for law, a in aics.items()
    ]


@pytest.mark.parametrize(
    ("gap", "status"),
    [(0.0, "supports"), (1.5, "supports"), (5.0, "inconclusive"), (10.5, "contradicts")],
)
def test_the_verdict_reads_the_aic_gap(gap: float, status: str) -> None:
    evidence = multistart_scaling(_law_rows(gap), {})
    assert evidence.status == status
    assert evidence.sentence.startswith(f"on p the combinatorial law is {gap:.3g} AIC units")
    assert multistart_scaling([], {}).status == "inconclusive"
