"""The linear path from a stored lottery run's dense network to its ticket: endpoints against the
stored test numbers, refusal of another run's checkpoints, level choice, figure and command."""

from __future__ import annotations

import shutil

import pytest
import torch
from click.testing import CliRunner

from escapelab.cli import main
from escapelab.config import build
from escapelab.experiments.lottery import LotterySpec
from escapelab.optim.minibatch import evaluate
from escapelab.report.story import caption
from escapelab.report.ticket_interpolation import (
    choose_level,
    load_ticket_pair,
    ticket_interpolation,
)
from escapelab.runner.store import Store
from escapelab.runner.sweep import run

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "data": {"datasets": ["digits"]},
    "net": {"hidden": [16]},
    "fit": {"steps": 40, "eval_every": 10, "batch_size": 50},
    "imp": {"levels": 2, "controls": []},
    "seeds": 2,
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A tiny lottery run: (store, hash, spec, records)."""
    root = tmp_path_factory.mktemp("lottery") / "store"
    outcome = run("lottery", TINY, store=root, progress=False)
    store = Store(root)
    spec = build(LotterySpec, TINY)
    return store, outcome.spec_hash, spec, store.records(outcome.spec_hash)


def _checkpoints(store, spec_hash, records, member):
    task = next(r["task"] for r in records if r["member"] == member)
    return store.checkpoint_dir(spec_hash, task)


@pytest.mark.parametrize("member", [0, 1])
def test_path_endpoints_are_the_stored_dense_and_ticket_numbers(stored, member):
    store, h, spec, records = stored
    pair = load_ticket_pair(spec, "digits", member, _checkpoints(store, h, records, member), 2)
    path = ticket_interpolation(pair)
    assert path.t[0] == pytest.approx(-0.25) and path.t[-1] == pytest.approx(1.25)
    assert len(path.t) == 61
    i0, i1 = int((path.t == 0).nonzero()), int((path.t == 1).nonzero())

    def stored_value(level, key):
        return next(
            r[key]
            for r in records
            if r["member"] == member and r["prune_level"] == level and r["role"] == "ticket"
        )

    # oracle: the training's own final test evaluation of the same weights
    assert float(path.accuracy[i0]) == stored_value(0, "test_acc")
    assert float(path.accuracy[i1]) == stored_value(2, "test_acc")
    assert path.loss_a == pytest.approx(stored_value(0, "test_loss"), rel=1e-5)
    assert path.loss_b == pytest.approx(stored_value(2, "test_loss"), rel=1e-5)
    # the ticket is the sparse end: a fifth of a fifth pruned, so 64 % of the weights kept
    assert pair.ticket_record["density"] == pytest.approx(0.64, abs=1e-3)
    zero_share = float((pair.ticket == 0).double().mean())
    assert zero_share > 0.3
    # chord barrier: non-negative, attained inside [0, 1]
    assert path.barrier >= 0 and 0 <= path.barrier_t <= 1


def test_level_choice_sparsest_within_one_point_else_last():
    def rec(level, acc):
        return {"prune_level": level, "role": "ticket", "seed": 7, "test_acc": acc}

    assert choose_level([rec(0, 0.90), rec(1, 0.895), rec(2, 0.891), rec(3, 0.85)], 7) == 2
    assert choose_level([rec(0, 0.90), rec(1, 0.80), rec(2, 0.70)], 7) == 2
    assert choose_level([rec(0, 0.90), rec(1, 0.95), rec(2, 0.80)], 7) == 1
    with pytest.raises(LookupError, match="no finished pruning level"):
        choose_level([rec(0, 0.9)], 7)


def test_loader_refuses_another_runs_checkpoints(stored, tmp_path):
    store, h, spec, records = stored
    where = _checkpoints(store, h, records, 0)
    # same seeds, other training: the fingerprint differs in "fit"
    other = build(LotterySpec, {**TINY, "fit": {**TINY["fit"], "steps": 30}})
    with pytest.raises(ValueError, match=r"other settings \(fit\), not this run's") as err:
        load_ticket_pair(other, "digits", 0, where)
    assert "\n" not in str(err.value)
    # other initialization seeds: no member of this run in that directory
    reseeded = build(LotterySpec, {**TINY, "seed": 5})
    with pytest.raises(ValueError, match="another run's") as err:
        load_ticket_pair(reseeded, "digits", 0, where)
    assert "\n" not in str(err.value)
    # a copy whose level files were written by another run: the fingerprint says so
    fake = tmp_path / "fake"
    shutil.copytree(where, fake)
    meta = fake / "imp.json"
    meta.write_text(meta.read_text().replace('"digits"', '"mnist1d"'))
    with pytest.raises(ValueError, match=r"other settings \(data\)"):
        load_ticket_pair(spec, "digits", 0, fake)
    with pytest.raises(ValueError, match="--level"):
        load_ticket_pair(spec, "digits", 0, where, level=3)


def test_landscape_command_draws_the_figure(stored, tmp_path):
    store, h, _, _ = stored
    out = tmp_path / "figs"
    result = CliRunner().invoke(
        main, ["landscape", h[:8], "--store", str(store.root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    figure = out / "ticket_interpolation_digits.png"
    assert f"figure: {figure}" in result.output
    assert figure.stat().st_size > 10_000
    assert "dense trained network (t = 0)" in caption(figure.name)
    bad = CliRunner().invoke(
        main, ["landscape", h[:8], "--store", str(store.root), "--member", "9"]
    )
    assert bad.exit_code == 2 and "--member" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_interpolation_is_linear_in_weights(stored):
    """theta(t) is evaluated exactly at t = 0.5 as the mean of the two networks."""
    store, h, spec, records = stored
    pair = load_ticket_pair(spec, "digits", 0, _checkpoints(store, h, records, 0), 1)
    path = ticket_interpolation(pair, torch.tensor([0.5], dtype=torch.float64))
    mid = (pair.dense + pair.ticket) / 2
    params, offset = {}, 0
    for name, shape in pair.model.shapes.items():
        params[name] = mid[offset : offset + shape.numel()].reshape(1, *shape)
        offset += shape.numel()
    loss, _ = evaluate(pair.model, params, pair.x_test, pair.y_test)
    assert float(path.loss[0]) == pytest.approx(float(loss[0]), rel=1e-6)
