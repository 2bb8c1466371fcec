"""Double descent: label noise, width packing (a narrow network as a masked member of a wider
one trains as itself), the experiment end to end."""

from __future__ import annotations

import pytest
import torch

from escapelab.config import SpecError, build
from escapelab.data.datasets import load_dataset
from escapelab.data.label_noise import resample_labels
from escapelab.experiments.double_descent import (
    NOTEBOOK_WIDTHS,
    DoubleDescentSpec,
    double_descent_rows,
    pack_widths,
)
from escapelab.nets.classifiers import build_model
from escapelab.nets.padding import embed_leading
from escapelab.nets.stacked import StackedModel
from escapelab.optim.minibatch import FitConfig, fit
from escapelab.runner.sweep import run, write_outputs

pytestmark = pytest.mark.usefixtures("single_thread")


def test_notebook_widths_are_the_integer_geomspace():
    assert NOTEBOOK_WIDTHS[:3] == (2, 3, 4) and NOTEBOOK_WIDTHS[-3:] == (177, 230, 300)
    assert 47 in NOTEBOOK_WIDTHS and 61 in NOTEBOOK_WIDTHS and len(NOTEBOOK_WIDTHS) == 19


def test_packings_cover_every_width_once():
    for packing in ("buckets", "one", "separate"):
        groups = pack_widths(NOTEBOOK_WIDTHS, packing)
        assert sorted(w for g in groups for w in g) == sorted(NOTEBOOK_WIDTHS)
    assert pack_widths(NOTEBOOK_WIDTHS, "buckets") == [
        [300, 230, 177],
        [135, 104, 80],
        [61, 47, 36, 27, 21, 16, 12, 9, 7, 5, 4, 3, 2],
    ]
    assert len(pack_widths(NOTEBOOK_WIDTHS, "separate")) == 19


def test_resampled_labels_change_the_expected_share():
    labels = torch.arange(10).repeat(2000)
    noisy = resample_labels(labels, 0.15, 10, seed=4)
    changed = (noisy != labels).float().mean().item()
    assert changed == pytest.approx(0.15 * 0.9, abs=0.01)  # 1/10 of redraws land on the label
    assert torch.equal(noisy, resample_labels(labels, 0.15, 10, seed=4))
    assert torch.equal(resample_labels(labels, 0.0, 10, seed=4), labels)
    with pytest.raises(SpecError, match="label_noise"):
        resample_labels(labels, 1.5, 10, seed=0)


@pytest.mark.parametrize("model", ["mlp", "cnn1d"])
def test_narrow_network_padded_into_a_wide_one_trains_as_itself(model):
    """Widths 3 and 7 as masked members of width 11: same outputs at init and the same
    weights after 30 SGD steps as the narrow networks trained alone."""
    data = load_dataset("digits", seed=0, val_fraction=0.1)
    shape = data.input_shape if model == "mlp" else (64,)

    def factory(w):
        return build_model(model, shape, 10, hidden=(w, w), channels=w)

    config = FitConfig(
        optimizer="sgd", lr=0.05, momentum=0.9, steps=30, eval_every=30, batch_size=50
    )
    wide = StackedModel(lambda: factory(11))
    narrow = {}
    for w in (3, 7):
        alone = StackedModel(lambda w=w: factory(w))
        init = alone.init([w])
        narrow[w] = (alone, init, fit(alone, init, data, config, [w]))
    members = [{n: p[0] for n, p in narrow[w][1].items()} for w in (3, 7)]
    params, masks = embed_leading(members, wide.shapes)
    x = data.x_test[:20]
    wide_out = wide.forward(params, x, shared=True)
    for j, w in enumerate((3, 7)):
        alone, init, _ = narrow[w]
        assert torch.allclose(wide_out[j], alone.forward(init, x, shared=True)[0], atol=1e-5)
    trained = fit(wide, params, data, config, [3, 7], masks)
    for j, w in enumerate((3, 7)):
        result = narrow[w][2]
        for name, p in result.params.items():
            block = trained.params[name][j][tuple(slice(0, s) for s in p.shape[1:])]
            assert torch.allclose(block, p[0], atol=1e-4), name
        assert float(trained.test_acc[j, -1]) == pytest.approx(
            float(result.test_acc[0, -1]), abs=2e-3
        )
    outside = ~masks["net.0.weight"]
    assert (trained.params["net.0.weight"][outside] == 0).all()


SMALL = {
    "widths": [2, 6, 16],
    "label_noise": [0.0, 0.5],
    "fit": {"steps": 30, "eval_every": 15},
}


def test_experiment_runs_summarizes_draws_resumes_and_packing_changes_nothing(tmp_path):
    outcome = run("double-descent", SMALL, store=tmp_path / "s", progress=False)
    assert outcome.tasks_run == 2 and len(outcome.records) == 6
    peaks = {r["label_noise"]: r for r in outcome.summary if r["kind"] == "peak"}
    assert set(peaks) == {0.0, 0.5}
    rows = [r for r in outcome.summary if r["kind"] == "width"]
    assert [r["params"] for r in rows[:3]] == [
        40 * 2 + 2 + 2 * 2 + 2 + 2 * 10 + 10,
        40 * 6 + 6 + 6 * 6 + 6 + 6 * 10 + 10,
        40 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10,
    ]
    noisy = [r for r in outcome.records if r["label_noise"] == 0.5]
    clean = [r for r in outcome.records if r["label_noise"] == 0.0]
    # the noisy labels are worse labels: training error on them exceeds that on clean labels
    assert sum(r["train_err"] for r in noisy) > sum(r["train_err"] for r in clean)
    write_outputs(outcome, tmp_path / "out")
    assert (tmp_path / "out" / "double_descent_mlp.png").stat().st_size > 10_000
    again = run("double-descent", SMALL, store=tmp_path / "s", progress=False)
    assert again.tasks_run == 0
    separate = run(
        "double-descent", {**SMALL, "packing": "separate"}, store=tmp_path / "s", progress=False
    )
    assert separate.spec_hash == outcome.spec_hash and separate.tasks_run == 0
    fresh = run(
        "double-descent", {**SMALL, "packing": "separate"}, store=tmp_path / "t", progress=False
    )
    for a, b in zip(outcome.records, fresh.records, strict=True):
        assert a["test_err"] == pytest.approx(b["test_err"], abs=2e-3)


@pytest.mark.parametrize(
    ("assignment", "field", "allowed"),
    [
        ({"label_noise": [1.5]}, "label_noise[0]", "<= 1"),
        ({"label_noise": [-0.1]}, "label_noise[0]", ">= 0"),
        ({"widths": [0]}, "widths[0]", ">= 1"),
        ({"model": "resnet"}, "model", "cnn1d"),
        ({"packing": "lots"}, "packing", "buckets"),
    ],
)
def test_spec_errors_name_the_field(assignment, field, allowed):
    with pytest.raises(SpecError) as err:
        build(DoubleDescentSpec, assignment)
    assert err.value.field == field and allowed in str(err.value)


def test_peak_is_found_after_the_dip_below_the_interpolation_width():
    def rec(w, test, train):
        return {
            "label_noise": 0.15,
            "model": "mlp",
            "width": w,
            "params": w,
            "member": 0,
            "test_err": test,
            "train_err": train,
            "diverged": False,
        }

    curve = [
        rec(2, 0.7, 0.7),
        rec(8, 0.45, 0.4),
        rec(16, 0.5, 0.2),
        rec(32, 0.55, 0.005),
        rec(64, 0.48, 0.0),
    ]
    rows = double_descent_rows(curve)
    peak = rows[-1]
    assert peak["interpolation_width"] == 32
    assert (peak["dip_width"], peak["peak_width"]) == (8, 32)
    assert peak["peak_over_dip"] == pytest.approx(0.10)
    assert peak["widest_test_err"] == 0.48
