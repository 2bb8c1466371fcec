"""The width-sweep end to end: determinism, resume after SIGKILL, the headline trend, the CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import escapelab
from escapelab.cli import main
from escapelab.experiments.base import Task, seed_range
from escapelab.runner.store import DB_NAME
from escapelab.runner.sweep import uncovered_tasks

TINY = {
    "teachers": 1,
    "student": {"widths": [4, 5], "seeds": 6},
    "train": {"steps": 1500, "refine_steps": 30},
    "seeds_per_task": 3,
}


def _science(records: list[dict]) -> list[tuple]:
    """Everything in a record except timings, sorted, for run-to-run comparison."""
    return sorted(tuple(sorted((k, v) for k, v in r.items() if not _timing(k))) for r in records)


def _timing(key: str) -> bool:
    """Record fields that hold wall times (they differ from run to run)."""
    return key == "wall_time" or key.startswith("seconds_")


def test_same_spec_same_records_and_rerun_skips(tmp_path: Path) -> None:
    a = escapelab.run("width-sweep", TINY, store=tmp_path / "a", progress=False)
    b = escapelab.run("width-sweep", TINY, store=tmp_path / "b", workers=2, progress=False)
    assert a.spec_hash == b.spec_hash
    assert len(a.records) == 12 and a.tasks_run == 4
    assert _science(a.records) == _science(b.records)
    again = escapelab.run("width-sweep", TINY, store=tmp_path / "a", progress=False)
    assert (again.tasks_run, again.tasks_skipped) == (0, 4)
    assert _science(again.records) == _science(a.records)
    for rec in a.records:
        assert rec["kind"] in escapelab.landscape.classify.CLASSES
        for key in (
            "loss",
            "grad_norm",
            "eig_min",
            "eig_max",
            "n_negative",
            "param_norm",
            "steps",
            "wall_time",
            "seconds_first_order",
            "seconds_certify",
        ):
            assert key in rec


def _done_tasks(store: Path) -> int:
    db = store / DB_NAME
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_resume_after_sigkill(tmp_path: Path) -> None:
    store = tmp_path / "runs"
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    cmd = [
        sys.executable,
        "-m",
        "escapelab.cli",
        "run",
        "width-sweep",
        "--config",
        str(config),
        "--store",
        str(store),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _done_tasks(store) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _done_tasks(store)
    assert 1 <= killed_at < 4, "the kill should land half-way through the sweep"
    resumed = escapelab.run("width-sweep", TINY, store=store, progress=False)
    assert resumed.tasks_skipped == killed_at and resumed.tasks_run == 4 - killed_at
    keys = [(r["width"], r["member"]) for r in resumed.records]
    assert len(keys) == len(set(keys)) == 12
    fresh = escapelab.run("width-sweep", TINY, store=tmp_path / "fresh", progress=False)
    assert _science(resumed.records) == _science(fresh.records)


def test_success_grows_with_width(tmp_path: Path) -> None:
    spec = {
        "teachers": 1,
        "student": {"widths": [4, 8], "seeds": 16},
        "train": {"steps": 2500, "certify_rounds": 1},
    }
    out = escapelab.run("width-sweep", spec, store=tmp_path, progress=False)
    p = {row["width"]: row["p_global"] for row in out.summary}
    assert p[8] >= p[4]
    assert p[4] < 1.0, "this teacher has bad minima at m = r*; the test needs them"
    row4 = next(r for r in out.summary if r["width"] == 4)
    assert row4["ci_low"] <= row4["p_global"] <= row4["ci_high"]
    assert row4["pred_subsets"] == row4["p_global"]


def test_cli_errors_exit_2_and_write_nothing(tmp_path: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "store"
    cases = [
        ["run", "width-sweep", "--set", "student.widths=0"],
        ["run", "width-sweep", "--set", "teacher.incoming=orthonormal", "--set", "teacher.d=2"],
        ["run", "width-sweep", "--set", "train.tol_global=-1"],
        ["run", "width-sweep", "--set", "bogus=1"],
        ["run", "width-sweep", "--config", str(tmp_path / "nope.toml")],
        ["run", "no-such-experiment"],
        ["show", "abcdef"],
    ]
    for args in cases:
        result = runner.invoke(main, [*args, "--store", str(store)])
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
        assert not store.exists(), args


def test_cli_run_list_show_export(tmp_path: Path) -> None:
    runner = CliRunner()
    store, out = tmp_path / "store", tmp_path / "report"
    args = [
        "run",
        "width-sweep",
        "--store",
        str(store),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        "student.widths=4",
        "--set",
        "student.seeds=3",
        "--set",
        "train.steps=300",
        "--set",
        "teachers=1",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in (
        "p_global_vs_width.png",
        "final_loss_by_width.png",
        "summary.csv",
        "summary.md",
        "report.html",
    ):
        assert (out / name).stat().st_size > 0
    listing = runner.invoke(main, ["list", "--store", str(store)])
    spec_hash = escapelab.Store(store).experiments()[0].hash
    assert spec_hash in listing.output
    shown = runner.invoke(main, ["show", spec_hash[:6], "--store", str(store)])
    assert shown.exit_code == 0 and '"seeds": 3' in shown.output
    assert 'named by (its fields that differ from the defaults): {"student": {' in shown.output
    csv_path = tmp_path / "rec.csv"
    exported = runner.invoke(
        main, ["export", spec_hash, "--store", str(store), "--out", str(csv_path)]
    )
    assert exported.exit_code == 0
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + 3 and "kind" in lines[0]


def test_cli_symmetry_counts(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["counts", "--r-star", "2..4", "--max-width", "9", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert (
        "r* = 3: saddle subspaces outnumber global-minimum subspaces up to m = 3" in result.output
    )
    # r* = 2: the crossover is r* itself, so no width below r* is named
    assert "r* = 2: saddle subspaces outnumber global-minimum subspaces at no width m >= 2" in (
        result.output
    )
    assert "up to m = 1" not in result.output
    table = (tmp_path / "symmetry_counts.md").read_text().splitlines()
    assert len(table) == 2 + (8 + 7 + 6)
    assert (tmp_path / "symmetry_counts.png").stat().st_size > 0
    bad = runner.invoke(main, ["counts", "--r-star", "1", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and not (tmp_path / "x").exists()


def _block(group: str, lo: int, hi: int, **params: object) -> Task:
    return Task(f"{group}/seeds={lo:05d}-{hi - 1:05d}", {**params, "lo": lo, "hi": hi})


def test_stored_seeds_are_judged_by_coverage_not_by_key() -> None:
    planned = [_block("m=0004", 0, 48, m=4), _block("m=0005", 0, 48, m=5)]
    stored = {"m=0004/seeds=00000-00015", "m=0004/seeds=00032-00047", "other/seeds=00000-00047"}
    todo, skipped = uncovered_tasks(planned, stored)
    assert skipped == 0
    assert todo[0] == Task("m=0004/seeds=00016-00031", {"m": 4, "lo": 16, "hi": 32})
    assert todo[1] is planned[1]  # nothing of m=5 stored: the task runs unchanged
    assert seed_range(todo[0].key) == ("m=0004", 16, 32)
    # finer blocks cover a coarse task; a coarse block covers finer tasks; gaps split a task
    fine = {f"m=0004/seeds={lo:05d}-{lo + 1:05d}" for lo in range(0, 48, 2)}
    assert uncovered_tasks(planned[:1], fine) == ([], 1)
    coarse = [_block("m=0004", lo, lo + 3, m=4) for lo in range(0, 12, 3)]
    assert uncovered_tasks(coarse, {"m=0004/seeds=00000-00011"}) == ([], 4)
    gappy = {"m=0004/seeds=00002-00003", "m=0004/seeds=00006-00009"}
    todo, _ = uncovered_tasks([_block("m=0004", 0, 12, m=4)], gappy)
    assert [(t.params["lo"], t.params["hi"]) for t in todo] == [(0, 2), (4, 6), (10, 12)]
    # keys of another form keep the exact-key rule
    plain = [Task("data=mnist1d"), Task("data=digits")]
    assert uncovered_tasks(plain, {"data=mnist1d"}) == ([plain[1]], 1)


TINY_2 = {
    "teachers": 1,
    "teacher": {"width": 2},
    "student": {"widths": [2, 3], "seeds": 4},
    "train": {"steps": 200, "refine_steps": 5},
}


def test_another_task_tiling_reuses_the_stored_seeds(tmp_path: Path) -> None:
    """seeds_per_task is not in the hash: a rerun with other blocks runs only the missing seeds."""
    store = tmp_path / "a"
    first = escapelab.run(
        "width-sweep", {**TINY_2, "seeds_per_task": 2}, store=store, progress=False
    )
    assert first.tasks_run == 4
    again = escapelab.run(
        "width-sweep", {**TINY_2, "seeds_per_task": 0}, store=store, progress=False
    )
    assert again.spec_hash == first.spec_hash
    assert (again.tasks_run, again.tasks_skipped) == (0, 2)
    assert again.records == first.records
    members = [(r["width"], r["member"]) for r in again.records]
    assert sorted(members) == [(m, i) for m in (2, 3) for i in range(4)]
    # a store missing one block of width 2 runs just that block, under its own key
    with sqlite3.connect(store / DB_NAME) as conn:
        conn.execute("DELETE FROM tasks WHERE key = 'm=0002/seeds=00002-00003'")
    refill = escapelab.run("width-sweep", TINY_2, store=store, progress=False)
    assert (refill.tasks_run, refill.tasks_skipped) == (1, 1)
    assert escapelab.Store(store).done_keys(refill.spec_hash) == {
        f"m={m:04d}/seeds={lo:05d}-{lo + 1:05d}" for m in (2, 3) for lo in (0, 2)
    }
    assert _science(refill.records) == _science(first.records)
    # and the same science run in one block per width, from scratch, gives the same endpoints:
    # the same classes and counts, numbers equal to rounding (certification refines members in
    # batches whose size depends on the tiling, and batched float arithmetic is exact only per
    # batch shape)
    whole = escapelab.run("width-sweep", TINY_2, store=tmp_path / "b", progress=False)
    assert whole.tasks_run == 2
    by_member = {(r["width"], r["member"]): r for r in first.records}
    assert len(whole.records) == len(by_member)
    for r in whole.records:
        other = by_member[(r["width"], r["member"])]
        for key in ("kind", "status", "certified", "rounds", "n_negative"):
            assert r[key] == other[key], key
        assert r["theta"] == pytest.approx(other["theta"], rel=1e-6, abs=1e-9)
        assert r["loss"] == pytest.approx(other["loss"], rel=1e-6, abs=1e-13)


def test_width_sweep_summary_separates_bad_minima_from_budget() -> None:
    from escapelab.config import build
    from escapelab.experiments.width_sweep import WidthSweep, WidthSweepSpec
    from escapelab.theory.multistart import wilson_interval

    kinds = ["global_min"] * 5 + ["local_min"] * 3 + ["not_converged"] * 2
    records = [{"width": 4, "member": i, "kind": k} for i, k in enumerate(kinds)]
    (row,) = WidthSweep().summarize(build(WidthSweepSpec, {}), records)
    assert (row["p_global"], row["p_bad_min"], row["p_not_converged"]) == (0.5, 0.3, 0.2)
    assert (row["bad_ci_low"], row["bad_ci_high"]) == wilson_interval(3, 10)
    assert (row["local_min"], row["not_converged"], row["saddle"]) == (3, 2, 0)


def test_several_teachers_are_pooled_and_each_is_its_single_teacher_run(tmp_path: Path) -> None:
    """teachers = 2 runs teacher seeds 0 and 1; each teacher's records are those of a run of
    that teacher alone, the summary has one row per teacher and width and one pooled row per
    width whose P(global) is the teachers' mean with a bootstrap interval inside their range."""
    from escapelab.theory.multistart import bootstrap_mean_interval

    both = escapelab.run("width-sweep", {**TINY_2, "teachers": 2}, store=tmp_path, progress=False)
    assert {r["teacher"] for r in both.records} == {0, 1}
    assert all(r["task"].startswith(f"teacher=0{r['teacher']}/") for r in both.records)
    for seed in (0, 1):
        alone = escapelab.run(
            "width-sweep",
            {**TINY_2, "teacher": {**TINY_2["teacher"], "seed": seed}},
            store=tmp_path / f"alone{seed}",
            progress=False,
        )
        mine = [{k: v for k, v in r.items() if k != "task"} for r in both.records]
        solo = [{k: v for k, v in r.items() if k != "task"} for r in alone.records]
        assert _science([r for r in mine if r["teacher"] == seed]) == _science(solo)
    rows = both.summary
    assert [(r["teacher"], r["width"]) for r in rows] == [
        (0, 2), (0, 3), (1, 2), (1, 3), ("pooled", 2), ("pooled", 3)
    ]  # fmt: skip
    for m in (2, 3):
        per = [r["p_global"] for r in rows if r["width"] == m and r["teacher"] != "pooled"]
        (pooled,) = [r for r in rows if r["width"] == m and r["teacher"] == "pooled"]
        assert pooled["p_global"] == sum(per) / 2 and pooled["teachers"] == 2
        assert (pooled["ci_low"], pooled["ci_high"]) == bootstrap_mean_interval(per)
        assert min(per) <= pooled["ci_low"] <= pooled["ci_high"] <= max(per)
        assert pooled["n"] == 8


def test_bootstrap_interval_over_teachers() -> None:
    from escapelab.theory.multistart import bootstrap_mean_interval

    assert bootstrap_mean_interval([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4), abs=1e-15)
    lo, hi = bootstrap_mean_interval([0.0, 1.0] * 4)
    assert 0.1 < lo < 0.5 < hi < 0.9
    assert bootstrap_mean_interval([0.0, 1.0] * 4) == (lo, hi)  # seeded
    assert all(v != v for v in bootstrap_mean_interval([]))
