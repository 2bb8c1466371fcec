"""The ``ticket-dose`` experiment: Newcombe's interval against the published examples, the dose
rows and thresholds on synthetic tallies, the findings and the verdict on hand-made rows, and a
tiny run through the runner (counts add up, the floor is there, a rerun stores nothing twice)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from escapelab.config import build, to_dict
from escapelab.experiments.ticket_dose import TicketDose, TicketDoseSpec
from escapelab.report.findings import findings
from escapelab.report.verdict import dose_tickets_fail
from escapelab.runner.store import Store
from escapelab.runner.sweep import run
from escapelab.tickets.dose_response import (
    Pairs,
    Tally,
    dose_arm,
    dose_rows,
    newcombe_interval,
    paired_newcombe_interval,
    rate_columns,
    threshold_rows,
    thresholds,
)
from report_store import TINY_SPECS

# Newcombe (1998), "Interval estimation for the difference between independent proportions:
# comparison of eleven methods", Statistics in Medicine 17, Table II, method 10 (hybrid score)
NEWCOMBE_TABLE_II = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0)),
]


@pytest.mark.parametrize(("counts", "expected"), NEWCOMBE_TABLE_II)
def test_newcombe_interval_matches_the_published_examples(counts, expected) -> None:
    lo, hi = newcombe_interval(*counts)
    assert (round(lo, 4), round(hi, 4)) == expected


def test_newcombe_interval_of_an_empty_sample_is_nan() -> None:
    assert all(math.isnan(v) for v in newcombe_interval(1, 0, 1, 5))
    assert newcombe_interval(3, 10, 3, 10)[0] < 0 < newcombe_interval(3, 10, 3, 10)[1]


# Newcombe (1998b), "Improved confidence intervals for the difference between binomial
# proportions based on paired data", Statistics in Medicine 17: the worked examples of method 10,
# cells (both, first only, second only, neither)
NEWCOMBE_PAIRED = [
    ((36, 12, 2, 0), (0.0569, 0.3404)),
    ((18, 12, 2, 18), (0.0562, 0.3290)),
    ((53, 0, 0, 1), (-0.0729, 0.0729)),
    ((0, 30, 0, 0), (0.8395, 1.0)),
]


@pytest.mark.parametrize(("cells", "expected"), NEWCOMBE_PAIRED)
def test_paired_interval_matches_the_published_examples(cells, expected) -> None:
    lo, hi = paired_newcombe_interval(Pairs(*cells))
    assert (round(lo, 4), round(hi, 4)) == expected


def test_paired_interval_is_the_independent_one_without_correlation_and_narrower_with() -> None:
    # ad - bc = 25*25 - 25*25 = 0: phi = 0, the same Wilson halves as two samples of 100
    assert paired_newcombe_interval(Pairs(25, 25, 25, 25)) == pytest.approx(
        newcombe_interval(50, 100, 50, 100)
    )
    # the same margins (30 and 20 of 100 fail), but the tickets that fail under the floor also
    # fail under the dose: the paired interval is narrower and lies above 0
    agree = paired_newcombe_interval(Pairs(20, 10, 0, 70))
    apart = newcombe_interval(30, 100, 20, 100)
    assert agree[1] - agree[0] < 0.6 * (apart[1] - apart[0])
    assert agree[0] > 0 > apart[0]
    assert all(math.isnan(v) for v in paired_newcombe_interval(Pairs(0, 0, 0, 0)))
    with pytest.raises(ValueError):
        Pairs(1, -1, 0, 0)


def test_pairs_keep_only_tickets_decided_under_both() -> None:
    dose = {"a": True, "b": True, "c": False, "d": None, "e": False, "only-dose": True}
    floor = {"a": True, "b": False, "c": True, "d": True, "e": False, "only-floor": False}
    assert Pairs.of(dose, floor) == Pairs(both=1, dose_only=1, floor_only=1, neither=1)


def test_paired_dose_rows_count_the_changed_tickets() -> None:
    floor = Tally(20, 100)
    doses = [("scale", 4.0, Tally(30, 100))]
    row = dose_rows(doses, floor, pairs=[Pairs(20, 10, 0, 70)])[0]
    assert row["diff_method"] == "paired" and row["n_pairs"] == 100
    assert (row["broken_pairs"], row["mended_pairs"]) == (10, 0)
    assert row["diff"] == pytest.approx(0.10) and row["above_floor"]
    assert (row["diff_low"], row["diff_high"]) == paired_newcombe_interval(Pairs(20, 10, 0, 70))
    alone = dose_rows(doses, floor)[0]
    assert alone["diff_method"] == "independent" and not alone["above_floor"]
    with pytest.raises(ValueError, match="one table of pairs per dose"):
        dose_rows(doses, floor, pairs=[])


def test_arms_order_doses_by_their_distance_from_no_perturbation() -> None:
    assert dose_arm("scale", 0.75) == ("scale down", 0.25)
    assert dose_arm("scale", 0.0) == ("scale down", 1.0)
    assert dose_arm("scale", 3.0) == ("scale up", 3.0)
    assert dose_arm("noise", 0.5) == ("noise", 0.5)
    assert dose_arm("scale", 1.0) is None and dose_arm("noise", 0.0) is None
    assert dose_arm("none", 0.0) is None and dose_arm("redraw", 1.0) is None


def test_tally_counts_failures_by_class_and_keeps_the_undecided_apart() -> None:
    outcomes = ["global_min", "local_min", "saddle", None, "local_min", None, "global_min"]
    t = Tally.of(outcomes, ("local_min", "saddle", "flat_channel"))
    assert (t.failures, t.n, t.undecided) == (3, 5, 2)
    assert t.kinds == {"local_min": 2, "saddle": 1}
    with pytest.raises(ValueError):
        Tally(failures=3, n=2)


def test_half_width_target_is_met_at_400_and_not_at_100() -> None:
    at_400 = rate_columns(Tally(200, 400))
    assert at_400["half_width"] == pytest.approx(0.0488, abs=1e-4) and at_400["resolved"]
    at_100 = rate_columns(Tally(50, 100))
    assert at_100["half_width"] == pytest.approx(0.0962, abs=1e-4) and not at_100["resolved"]
    assert rate_columns(Tally(50, 100), target=0.1)["resolved"]


def test_threshold_is_the_first_dose_of_each_arm_above_the_floor() -> None:
    floor = Tally(10, 100)  # 0.10
    doses = [
        ("scale", 0.0, Tally(60, 100)),  # far above, but 0.75 comes first in its arm
        ("scale", 0.5, Tally(12, 100)),
        ("scale", 0.75, Tally(30, 100)),
        ("scale", 1.5, Tally(11, 100)),
        ("scale", 4.0, Tally(40, 100)),
        ("scale", 2.0, Tally(35, 100)),  # out of order on purpose: distance decides
        ("noise", 1.0, Tally(9, 100)),
        ("noise", 4.0, Tally(16, 100)),  # +0.06: interval [-0.03, 0.16] straddles 0
    ]
    rows = dose_rows(doses, floor)
    assert [r["above_floor"] for r in rows] == [True, False, True, False, True, True, False, False]
    by_size = {(r["perturbation"], r["size"]): r for r in rows}
    assert by_size["scale", 0.75]["diff"] == pytest.approx(0.20)
    lo, hi = newcombe_interval(30, 100, 10, 100)
    assert (by_size["scale", 0.75]["diff_low"], by_size["scale", 0.75]["diff_high"]) == (lo, hi)
    first = thresholds(rows)
    assert first["scale down"]["size"] == 0.75
    assert first["scale up"]["size"] == 2.0
    assert first["noise"] is None
    assert set(first) == {"scale down", "scale up", "noise"}
    assert "noise" not in thresholds([r for r in rows if r["perturbation"] == "scale"])


def _rows(diffs_above: bool) -> list[dict]:
    """Hand-made summary rows of one neuron-level problem: a floor of 10 in 100 and two doses."""
    head = {"ticket_kind": "neuron", "problem": "p", "teachers": 4}
    floor = Tally(10, 100, kinds={"local_min": 10})
    high = Tally(40, 100, undecided=3, kinds={"local_min": 30, "flat_channel": 10})
    doses = [("scale", 4.0, high if diffs_above else Tally(10, 100, kinds={"saddle": 10}))]
    doses.append(("noise", 1.0, Tally(9, 100, kinds={"local_min": 9})))
    rows = [{**head, "role": "floor", "label": "none", **rate_columns(floor)}]
    dose = [
        {**head, "role": "dose", "label": f"{k} {s:g}", **r}
        for (k, s, _), r in zip(doses, dose_rows(doses, floor), strict=True)
    ]
    rows += dose
    rows += [{**head, "role": "threshold", **t} for t in threshold_rows(dose)]
    return rows


def test_findings_and_verdict_read_the_rows() -> None:
    rows = _rows(diffs_above=True)
    said = findings("ticket-dose", rows, {"target_half_width": 0.05})
    assert said[0] == (
        "Neuron-level tickets on p (4 teachers): the floor (unperturbed) is 10 failures of 100 "
        "(0.10 [0.06, 0.17]); failure departs from it first at scale 4 (0.40 [0.31, 0.50], "
        "+0.30 [+0.18, +0.41] above the floor)."
    )
    assert said[1] == (
        "Neuron-level tickets on p (4 teachers): 0 of 2 doses meet the ±0.05 target for the "
        "rate's 95 % interval and 0 for the difference's (widest ±0.11 at scale 4; 100 tickets "
        "per dose)."
    )
    assert said[2] == (
        "Neuron-level tickets on p (4 teachers): under the doses, 49 runs fail (39 local_min, "
        "10 flat_channel); 3 ran out of budget or diverged, counted apart."
    )
    assert dose_tickets_fail(rows, {}).status == "supports"
    flat = _rows(diffs_above=False)
    assert "no dose departs from it" in findings("ticket-dose", flat, {})[0]
    # a dose whose difference lies below 0 (0 of 100 against 10 of 100) is named as lowering it
    lowered = [
        {**r, "diff": -0.10, "diff_low": -0.17, "diff_high": -0.05}
        if r["label"] == "noise 1"
        else r
        for r in flat
    ]
    assert findings("ticket-dose", lowered, {})[0].endswith(
        "; 1 dose lowers it (noise 1; most at noise 1, -0.10 [-0.17, -0.05])."
    )
    # the largest upper end (+0.09) is above the 0.05 target: not enough to contradict
    assert dose_tickets_fail(flat, {}).status == "inconclusive"
    assert dose_tickets_fail(flat, {"target_half_width": 0.10}).status == "contradicts"
    assert dose_tickets_fail([], {}).status == "inconclusive"


# the report store's tiny spec with two teachers
TINY = {
    **TINY_SPECS["ticket-dose"],
    "neuron": {**TINY_SPECS["ticket-dose"]["neuron"], "teachers": 2},
}


def test_default_spec_has_the_fine_grid_and_four_teachers() -> None:
    spec = build(TicketDoseSpec, {})
    grid = spec.perturb.grid()
    assert [p.label for p in grid][:2] == ["none", "scale 0"]
    assert len(grid) == 17  # the floor and 16 doses
    assert spec.neuron.teachers == 4 and spec.weight.seeds == 24
    assert len(TicketDose().tasks(spec)) == 6


def test_a_tiny_run_adds_up_and_resumes_without_storing_twice(tmp_path: Path) -> None:
    out = run("ticket-dose", TINY, store=tmp_path, progress=False)
    assert out.tasks_run == 3  # two teachers, one weight block
    rows = out.summary
    problems = list(dict.fromkeys((r["ticket_kind"], r["problem"]) for r in rows))
    assert problems == [("neuron", "teacher-student r*=2 m=3"), ("weight", "digits")]
    for kind, problem in problems:
        mine = [r for r in rows if (r["ticket_kind"], r["problem"]) == (kind, problem)]
        floors = [r for r in mine if r["role"] == "floor"]
        assert len(floors) == 1
        floor = floors[0]
        doses = [r for r in mine if r["role"] == "dose"]
        assert [r["label"] for r in doses] == ["scale 0", "scale 4", "noise 1"]
        tickets = floor["n"] + floor["undecided"]
        for r in [floor, *doses]:
            assert r["n"] + r["undecided"] == tickets  # every ticket once per dose
            assert sum(r["failure_kinds"].values()) == r["failures"] <= r["n"]
            if r["n"]:
                assert r["ci_low"] <= r["failure_rate"] <= r["ci_high"]
        for r in doses:  # paired per ticket: the changed pairs make the difference
            assert r["diff_method"] == "paired" and r["n_pairs"] <= min(r["n"], floor["n"])
            if r["n_pairs"]:
                changed = r["broken_pairs"] - r["mended_pairs"]
                assert r["diff"] == pytest.approx(changed / r["n_pairs"])
            if r["n_pairs"] == r["n"] == floor["n"]:  # no ticket undecided: margins agree
                assert changed == r["failures"] - floor["failures"]
        assert sorted(r["arm"] for r in mine if r["role"] == "threshold") == [
            "noise",
            "scale down",
            "scale up",
        ]
        if kind == "neuron":
            assert floor["members"] == 6 and floor["teachers"] == 2
            assert tickets + floor["no_ticket"] == 6
            records = [r for r in out.records if r["ticket_kind"] == "neuron" and r["kind"]]
            assert tickets == len(records) // 4  # the floor and three doses per ticket
        else:
            assert floor["label"] == "none, reshuffled"
            assert tickets == sum(
                r["winning"] for r in out.records if r.get("perturbation") == "reshuffle"
            )
    said = findings("ticket-dose", rows, to_dict(out.spec))
    assert said and all(s.endswith(".") for s in said)
    paths = TicketDose().figures(out.spec, out.records, tmp_path / "figures")
    assert [p.name for p in paths] == ["ticket_dose.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run("ticket-dose", TINY, store=tmp_path, progress=False)
    assert again.tasks_run == 0 and len(again.records) == len(out.records)
    stored = Store(tmp_path).experiments()
    assert len(stored) == 1
