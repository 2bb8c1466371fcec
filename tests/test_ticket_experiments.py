"""The lottery (E6) and ticket-perturbation (E3, weight level) experiments end to end."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from escapelab.cli import main
from escapelab.config import SpecError, build
from escapelab.experiments.base import Task
from escapelab.experiments.kits.weight_tickets import (
    WeightTicketSpec,
    top_k_overlap,
    weight_ticket_records,
    weight_ticket_summary,
)
from escapelab.experiments.lottery import LotterySpec
from escapelab.experiments.ticket_perturbation import TicketPerturbationSpec
from escapelab.runner.sweep import run, write_outputs
from escapelab.tickets.masks import MaskSet
from escapelab.tickets.perturb import Perturbation

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_FIT = {"steps": 40, "eval_every": 10, "batch_size": 50}
TINY_NET = {"hidden": [16]}


def tiny_lottery(tmp_path):
    spec = {
        "data": {"datasets": ["digits"]},
        "net": TINY_NET,
        "fit": TINY_FIT,
        "imp": {"levels": 2},
        "seeds": 2,
    }
    return run("lottery", spec, store=tmp_path / "store", progress=False)


def test_lottery_runs_stores_summarizes_and_draws(tmp_path):
    outcome = tiny_lottery(tmp_path)
    assert outcome.tasks_run == 1
    assert len(outcome.records) == 2 + 2 * 2 * 3
    rows = {(r["prune_level"], r["role"]): r for r in outcome.summary}
    assert rows[(1, "ticket")]["density"] == pytest.approx(0.8, abs=1e-3)
    assert rows[(2, "random_mask")]["density"] == pytest.approx(0.64, abs=1e-3)
    assert rows[(0, "ticket")]["n"] == 2
    report = write_outputs(outcome, tmp_path / "out")
    assert (tmp_path / "out" / "lottery_digits.png").stat().st_size > 10_000
    assert report.exists()
    checkpoints = list((tmp_path / "store").rglob("level_002.json"))
    assert len(checkpoints) == 1
    again = tiny_lottery(tmp_path)
    assert again.tasks_run == 0 and again.records == outcome.records


@pytest.mark.parametrize(
    ("assignment", "field", "allowed"),
    [
        ({"imp": {"rate": 1.5}}, "imp.rate", "< 1"),
        ({"imp": {"rate": 0}}, "imp.rate", "> 0"),
        ({"data": {"datasets": ["mnist2d"]}}, "data.datasets[0]", "mnist1d"),
        ({"imp": {"rewind": "step", "rewind_step": 5000}}, "imp.rewind_step", "fit.steps"),
        ({"imp": {"rewind_step": 5}}, "imp.rewind_step", "rewind = step"),
        ({"imp": {"output_rate": 1.0}}, "imp.output_rate", "< 1"),
        ({"net": {"model": "resnet"}}, "net.model", "cnn1d"),
    ],
)
def test_lottery_spec_errors_name_the_field(assignment, field, allowed):
    with pytest.raises(SpecError) as err:
        build(LotterySpec, assignment)
    assert err.value.field == field and allowed in str(err.value)


def test_cli_reports_a_bad_rate_without_a_traceback(tmp_path):
    result = CliRunner().invoke(
        main, ["run", "lottery", "--store", str(tmp_path), "--set", "imp.rate=1.5"]
    )
    assert result.exit_code == 2
    assert "imp.rate" in result.output and "Traceback" not in result.output


def test_weight_level_perturbation_rewinds_must_keep_initial_weights():
    with pytest.raises(SpecError, match="init or step"):
        build(TicketPerturbationSpec, {"weight": {"imp": {"rewind": "lr"}}})


def test_top_k_overlap_closed_form():
    weights = {"w": torch.tensor([[5.0, -4.0, 3.0, 0.5, 0.1, -0.2]])}
    masks = MaskSet({"w": torch.tensor([[True, False, True, False, False, True]])})
    # k = 3: the largest magnitudes are entries 0, 1, 2; the mask holds 0 and 2
    assert top_k_overlap(weights, masks).tolist() == [pytest.approx(2 / 3)]


@pytest.fixture(scope="module")
def weight_records():
    spec = build(
        WeightTicketSpec,
        {
            "data": {"datasets": ["digits"]},
            "net": TINY_NET,
            "fit": TINY_FIT,
            "imp": {"levels": 2, "controls": []},
            "seeds": 2,
        },
    )
    grid = [
        Perturbation("none"),
        Perturbation("scale", 1.0),
        Perturbation("noise", 0.0),
        Perturbation("scale", 8.0),
    ]
    task = Task("t", {"ticket_kind": "weight", "dataset": "digits", "lo": 0, "hi": 2})
    return weight_ticket_records(spec, grid, task, torch.device("cpu"))


def test_identity_perturbations_reproduce_the_unperturbed_run(weight_records):
    assert len(weight_records) == 2 * 5  # the grid, then the reshuffled reference
    for member in (0, 1):
        mine = [r for r in weight_records if r["member"] == member]
        none, scale1, noise0, _, reshuffled = mine
        assert none["success"] and none["reference_acc"] == none["test_acc_es"]
        assert reshuffled["perturbation"] == "reshuffle" and reshuffled["size"] == 0
        assert (
            reshuffled["es_step"] != none["es_step"] or reshuffled["test_loss"] != none["test_loss"]
        )
        for same in (scale1, noise0):
            for key in ("test_acc_es", "test_acc", "ticket_alone_acc", "ticket_overlap", "es_step"):
                assert same[key] == none[key]
        assert none["density"] == pytest.approx(0.64, abs=1e-3)
        assert none["chance_overlap"] == none["density"]
        assert 0 <= none["ticket_overlap"] <= 1


def test_weight_summary_counts_failures_of_winning_tickets(weight_records):
    rows = {r["label"]: r for r in weight_ticket_summary(weight_records)}
    assert list(rows) == ["none", "scale 1", "noise 0", "scale 8", "none, reshuffled"]
    winning = sum(r["winning"] for r in weight_records if r["label"] == "none")
    assert rows["none"]["n"] == winning and rows["none"]["failures"] == 0
    big = [r for r in weight_records if r["label"] == "scale 8" and r["winning"]]
    assert rows["scale 8"]["failures"] == sum(not r["success"] for r in big)


def test_ticket_perturbation_runs_both_kinds_through_the_runner(tmp_path):
    spec = {
        "perturb": {"redraw": True, "scales": [4.0], "noise": []},
        "neuron": {
            "teacher": {"width": 2, "seed": 1},
            "student": {"widths": [3], "seeds": 3},
            "train": {"steps": 300, "refine_steps": 10},
        },
        "weight": {
            "data": {"datasets": ["digits"]},
            "net": TINY_NET,
            "fit": TINY_FIT,
            "imp": {"levels": 1, "controls": []},
            "seeds": 2,
        },
    }
    outcome = run("ticket-perturbation", spec, store=tmp_path, progress=False)
    assert outcome.tasks_run == 2
    levels = {(r["ticket_kind"], r["label"]) for r in outcome.summary}
    assert levels >= {("weight", "none"), ("weight", "redraw"), ("weight", "scale 4")}
    neuron = [r for r in outcome.records if r["ticket_kind"] == "neuron"]
    assert {r["member"] for r in neuron} == {0, 1, 2}
    for row in outcome.summary:
        assert row["problem"] in ("digits", "teacher-student m=3")
        if row["n"]:
            assert row["ci_low"] <= row["failure_rate"] <= row["ci_high"]
    write_outputs(outcome, tmp_path / "out")
    assert (tmp_path / "out" / "ticket_perturbation.png").stat().st_size > 10_000


def test_an_interrupted_lottery_run_resumes_at_the_level_where_it_stopped(tmp_path, monkeypatch):
    import escapelab.tickets.imp as imp_module

    reference = tiny_lottery(tmp_path / "reference")
    real_fit, calls, stop_at = imp_module.fit, [], [2]

    def counted_fit(*args, **kwargs):
        if len(calls) == stop_at[0]:  # levels 0 (dense) and 1 finish; level 2 is interrupted
            raise KeyboardInterrupt
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(imp_module, "fit", counted_fit)
    with pytest.raises(KeyboardInterrupt):
        tiny_lottery(tmp_path / "resumed")
    stop_at[0] = -1
    resumed = tiny_lottery(tmp_path / "resumed")
    assert len(calls) == 3  # only level 2 was trained again
    assert resumed.records == reference.records


def test_teacher_student_data_is_the_teachers_regression_problem():
    from escapelab.data.teacher_student import teacher_student_data
    from escapelab.problems.teacher import make_teacher

    teacher = make_teacher(d=3, width=2, activation="erf", seed=4)
    data = teacher_student_data(teacher, n_train=50, n_test=20, seed=1, val_fraction=0.2)
    assert data.regression and data.sizes == {"train": 40, "val": 10, "test": 20}
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert y.shape == (len(x), 1)
        torch.testing.assert_close(y, teacher(x.double()).float(), atol=1e-6, rtol=1e-6)
    again = teacher_student_data(teacher, n_train=50, n_test=20, seed=1, val_fraction=0.2)
    assert torch.equal(again.x_val, data.x_val)


def test_regression_loss_is_half_the_mean_squared_error():
    from escapelab.data.teacher_student import teacher_student_data
    from escapelab.nets.classifiers import build_model
    from escapelab.nets.stacked import StackedModel
    from escapelab.optim.minibatch import evaluate
    from escapelab.problems.teacher import make_teacher

    data = teacher_student_data(make_teacher(d=2, width=2, seed=0), n_train=30, n_test=10)
    model = StackedModel(lambda: build_model("mlp", (2,), 1, hidden=(4,), activation="erf"))
    zeros = {n: torch.zeros_like(p) for n, p in model.init([0, 1]).items()}
    loss, acc = evaluate(model, zeros, data.x_test, data.y_test, regression=True)
    expected = 0.5 * data.y_test.square().sum(1).mean()
    torch.testing.assert_close(loss, expected.expand(2), rtol=1e-6, atol=0)
    assert bool(acc.isnan().all())


def test_lottery_runs_imp_on_the_teacher_student_problem(tmp_path):
    spec = {
        "data": {"datasets": ["teacher"], "n_train": 400, "n_test": 200},
        "net": {"hidden": [8], "activation": "erf"},
        "fit": {"steps": 60, "eval_every": 20, "batch_size": 50, "lr": 0.003},
        "imp": {"levels": 1},
        "seeds": 2,
    }
    outcome = run("lottery", spec, store=tmp_path, progress=False)
    assert all(math.isnan(r["test_acc"]) for r in outcome.records)
    rows = {(r["prune_level"], r["role"]): r for r in outcome.summary}
    assert all(0 < r["test_loss_es"] < math.inf for r in rows.values())
    assert rows[(1, "ticket")]["density"] == pytest.approx(0.8, abs=0.01)
    write_outputs(outcome, tmp_path / "out")
    assert (tmp_path / "out" / "lottery_teacher.png").stat().st_size > 10_000


def test_weight_level_tickets_need_labelled_data():
    with pytest.raises(SpecError, match="neuron level"):
        build(TicketPerturbationSpec, {"weight": {"data": {"datasets": ["teacher"]}}})
