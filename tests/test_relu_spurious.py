"""The Safran-Shamir ReLU setting: frozen output weights, exact endpoints, honest counts."""

from __future__ import annotations

import pytest
import torch

from escapelab.config import SpecError, build
from escapelab.experiments import get_experiment
from escapelab.experiments.base import Task
from escapelab.experiments.relu_spurious import ReluSpuriousSpec, frozen_output_start, setting
from escapelab.optim.full_batch import train
from escapelab.theory.multistart import wilson_interval

pytestmark = pytest.mark.usefixtures("single_thread")
SPEC = ReluSpuriousSpec(ks=(4,), extra=(0, 1), inits=3, steps=3000)
EXPERIMENT = get_experiment("relu-spurious")


def test_output_weights_stay_one_and_members_reach_the_teacher() -> None:
    objective, arch = setting(SPEC, 4, 4)
    theta0, free = frozen_output_start(SPEC, arch, 0, 3)
    assert torch.equal(theta0[:, 16:], torch.ones(3, 4, dtype=theta0.dtype))
    assert int(free.sum()) == 3 * 16
    result = train(objective, theta0, SPEC.train_config(4), free=free)
    assert torch.equal(result.theta[:, 16:], theta0[:, 16:])  # held exactly
    assert result.status == ["global"] * 3 and bool(result.certified.all())
    assert float(result.loss.max()) <= 1e-13
    # at the global minimum the incoming vectors are the teacher's, in some order
    w = arch.unflatten(result.theta)[0].weight
    teacher_w = objective.teacher_w
    for member in w:
        dist = torch.cdist(member, teacher_w)
        assert float(dist.min(dim=1).values.max()) < 1e-6


def test_tasks_records_and_summary() -> None:
    tasks = EXPERIMENT.tasks(SPEC)
    assert [t.key for t in tasks] == ["k=04/n=04/seeds=00000-00002", "k=04/n=05/seeds=00000-00002"]
    records = EXPERIMENT.run_task(SPEC, Task(tasks[1].key, tasks[1].params), torch.device("cpu"))
    assert [r["member"] for r in records] == [0, 1, 2] and {r["n"] for r in records} == {5}
    assert all(r["kind"] == "global_min" and r["certified"] for r in records)
    # every global minimum has a unit collinear with a teacher unit: it sits on a kink
    assert all(r["kink_angle"] < 1e-6 for r in records)
    assert all(len(r["theta"]) == 4 * 5 for r in records)


def test_summary_counts_spurious_minima_with_wilson_intervals() -> None:
    kinds = ["local_min"] * 3 + ["global_min"] * 6 + ["not_converged"]
    records = [
        {
            "k": 6,
            "n": 6,
            "kind": kind,
            "loss": 0.0215 if kind == "local_min" else 0.0,
            "kink_angle": 0.3,
            "wall_time": 0.5,
        }
        for kind in kinds
    ]
    (row,) = EXPERIMENT.summarize(SPEC, records)
    assert (row["inits"], row["local_min"], row["global_min"], row["not_converged"]) == (
        10,
        3,
        6,
        1,
    )
    assert row["p_spurious"] == pytest.approx(0.3) and row["p_not_converged"] == pytest.approx(0.1)
    assert (row["spurious_ci_low"], row["spurious_ci_high"]) == wilson_interval(3, 10)
    assert row["spurious_losses"] == "0.0215" and row["on_kink"] == 0
    assert row["wall_time"] == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("field", "value"), [("ks", [0]), ("extra", [-1]), ("inits", 0), ("step_scale", 0.0)]
)
def test_bad_settings_name_their_field(field: str, value: object) -> None:
    with pytest.raises(SpecError, match=field):
        build(ReluSpuriousSpec, {field: value})


def test_run_page_sentences_name_budget_and_divergence_apart() -> None:
    from escapelab.config import to_dict
    from escapelab.report.findings import findings
    from escapelab.report.story import method

    rows = [
        {
            "k": 9,
            "n": 9,
            "inits": 200,
            "local_min": 41,
            "p_spurious": 0.205,
            "spurious_ci_low": 0.15,
            "spurious_ci_high": 0.27,
            "not_converged": 3,
            "diverged": 0,
        },
        {
            "k": 6,
            "n": 8,
            "inits": 200,
            "local_min": 0,
            "p_spurious": 0.0,
            "spurious_ci_low": 0.0,
            "spurious_ci_high": 0.02,
            "not_converged": 0,
            "diverged": 74,
        },
    ]
    said = findings("relu-spurious", rows, {})
    assert said == [
        "n = k: spurious minima in k = 9: 41 of 200 (0.20 [0.15, 0.27]), 3 out of budget.",
        "n = k + 2: spurious minima in k = 6: 0 of 200 (0.00 [0.00, 0.02]), 74 diverged.",
    ]
    text = " ".join(method("relu-spurious", to_dict(SPEC)))
    assert "step 5/k" in text and "n = k + 0, 1" in text and "1e-09" in text
