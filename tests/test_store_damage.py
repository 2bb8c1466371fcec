"""A store that detects and survives damage: every command on a damaged store says so in one line
(exit 3, naming `escapelab store check` and `store recover`), a zero-byte file is reported and
not recreated, and `store recover` salvages every readable run and task into a new store, from
which a rerun recomputes exactly the lost tasks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import escapelab
from escapelab.cli import main
from escapelab.runner.repair import check_store
from escapelab.runner.store import DB_NAME, SCHEMA_VERSION, Store
from faults import TINY_ARGS, snapshot

RUN = ["run", "width-sweep", "--no-progress", *TINY_ARGS, "--set", "seeds_per_task=1"]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A sound store: one tiny run in 4 tasks (2 widths x 2 one-seed blocks)."""
    store = tmp_path_factory.mktemp("damage") / "store"
    result = CliRunner().invoke(main, [*RUN, "--store", str(store)])
    assert result.exit_code == 0, result.output
    return store, Store(store).experiments()[0].hash


def _damage(db: Path, kind: str) -> None:
    data = db.read_bytes()
    if kind == "zero-byte":
        db.write_bytes(b"")
    elif kind == "truncated":
        db.write_bytes(data[: len(data) // 2])
    elif kind == "garbage-header":
        db.write_bytes(b"\xa5" * 100 + data[100:])
    elif kind == "garbage-middle":
        mid = len(data) // 2
        db.write_bytes(data[:mid] + b"\xa5" * 4096 + data[mid + 4096 :])


KINDS = ["zero-byte", "truncated", "garbage-header", "garbage-middle"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["list", "show", "run", "export"])
def test_every_command_reports_damage(
    stored: tuple[Path, str], tmp_path: Path, kind: str, command: str
) -> None:
    original, spec_hash = stored
    store = tmp_path / "store"
    shutil.copytree(original, store)
    _damage(store / DB_NAME, kind)
    before = snapshot(store)
    args = {
        "list": ["list"],
        "show": ["show", spec_hash],
        "run": RUN,
        "export": ["export", spec_hash, "--out", str(tmp_path / "r.csv")],
    }[command]
    result = CliRunner().invoke(main, [*args, "--store", str(store)])
    lines = result.stderr.splitlines()
    assert result.exit_code == 3, (kind, command, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.output, lines
    assert f"escapelab store check {store}" in lines[0]
    assert f"escapelab store recover {store} --into" in lines[0]
    assert snapshot(store) == before, "a damaged store must not be touched, nor recreated"


@pytest.mark.parametrize("kind", KINDS)
def test_check_and_recover(stored: tuple[Path, str], tmp_path: Path, kind: str) -> None:
    original, spec_hash = stored
    store = tmp_path / "store"
    shutil.copytree(original, store)
    _damage(store / DB_NAME, kind)
    runner = CliRunner()
    checked = runner.invoke(main, ["store", "check", str(store)])
    assert checked.exit_code == 3 and "damaged" in checked.stderr
    new = tmp_path / "new"
    recovered = runner.invoke(main, ["store", "recover", str(store), "--into", str(new)])
    assert recovered.exit_code == 0, recovered.output
    assert check_store(new).ok
    rows = Store(new).experiments()
    kept = rows[0].tasks_done if rows else 0
    if kind == "garbage-header":  # the pages behind a rebuilt header are intact
        assert "header was rebuilt" in recovered.output and kept == 4
    if kind == "zero-byte":
        assert kept == 0 and "0 experiment(s)" in recovered.output
    print(kind, recovered.output)
    if rows:  # a rerun into the recovered store computes exactly the lost tasks
        spec = {
            "teachers": 1,
            "teacher": {"width": 2},
            "student": {"widths": [2, 3], "seeds": 2},
            "train": {"steps": 50, "refine_steps": 2},
            "seeds_per_task": 1,
        }
        again = escapelab.run("width-sweep", spec, store=new, progress=False)
        assert again.spec_hash == spec_hash
        assert (again.tasks_run, again.tasks_skipped) == (4 - kept, kept)
        assert len(again.records) == 4


def test_sound_store_checks_ok(stored: tuple[Path, str]) -> None:
    result = CliRunner().invoke(main, ["store", "check", str(stored[0])])
    assert (
        result.exit_code == 0
        and f"ok (schema {SCHEMA_VERSION}, 1 experiment(s), 4 task(s))" in result.output
    )


def test_newer_schema_is_refused(stored: tuple[Path, str], tmp_path: Path) -> None:
    import sqlite3

    store = tmp_path / "store"
    shutil.copytree(stored[0], store)
    with sqlite3.connect(store / DB_NAME) as conn:
        conn.execute("PRAGMA user_version = 99")
    result = CliRunner().invoke(main, ["list", "--store", str(store)])
    assert result.exit_code == 3 and "newer escapelab (store schema 99" in result.stderr
