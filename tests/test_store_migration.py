"""Stores written before science hashes: opened by today's code, every run keeps loading.

The old hashes below were computed by escapelab before the change (sha256 of the full spec's
canonical JSON), so they pin what real stores on disk hold.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from escapelab.cli import main
from escapelab.config import build, spec_hash, to_dict
from escapelab.experiments import get_experiment
from escapelab.runner.store import (
    CERTIFY_PIN,
    DB_NAME,
    PINNED_FIELDS,
    SCHEMA_VERSION,
    HashMigration,
    Store,
    StoreMigrationWarning,
)

OLD_DEFAULT_HASHES = {
    "width-sweep": "796eb455a44f354f",
    "subnetworks": "e6c227cbe97155e1",
    "escape": "05cdf9efc89272dd",
    "minima-census": "d165a4d6873cb74d",
    "lottery": "897d119893532fb5",
    "ticket-perturbation": "9da589fd99793f10",
}
OLD_WIDTHS_76 = "f18bbba36a4afa70"  # width-sweep with student.widths = 7,6

# the schema of version 0 stores, as escapelab wrote it
OLD_SCHEMA = """
CREATE TABLE experiments (
    hash TEXT PRIMARY KEY, name TEXT NOT NULL, spec TEXT NOT NULL, version TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE tasks (
    hash TEXT NOT NULL REFERENCES experiments(hash), key TEXT NOT NULL, status TEXT NOT NULL,
    records TEXT NOT NULL, wall_time REAL NOT NULL, finished REAL NOT NULL, version TEXT NOT NULL,
    PRIMARY KEY (hash, key)
);
"""


def old_hash(name: str, spec_data: dict) -> str:
    """The hash escapelab gave before: every field of the spec, in canonical JSON."""
    text = json.dumps(
        {"experiment": name, "spec": spec_data}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# train fields that 0.2 added (TrainSpec now embeds the trainer's TrainConfig); 0.1 did not
# write them
ADDED_TRAIN_FIELDS = (
    "betas",
    "eps",
    "record_every",
    "certify_rounds",
    "tol_cert",
    "tol_zero",
    "handoff_grad",
)


def as_written_by_0_1(data: dict) -> dict:
    """Spec data as escapelab 0.1 wrote it: without the fields added since (the train section's
    and the number of teachers of a teacher-student spec)."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            value = as_written_by_0_1(value)
            if key == "train" and "tol_eig" in value:
                value = {k: v for k, v in value.items() if k not in ADDED_TRAIN_FIELDS}
        if key == "teachers" and "student" in data:
            continue
        out[key] = value
    return out


def spec_data(name: str, data: dict | None = None) -> dict:
    """The spec data of ``name`` as a version 0 store holds it."""
    return as_written_by_0_1(to_dict(build(get_experiment(name).spec_type, data or {})))


def old_store(root: Path) -> dict[str, tuple[str, dict]]:
    """A version 0 store: every default spec, widths 7,6, a twin of the default width-sweep that
    differs only in seeds_per_task (newer), and a spec that no longer builds. Returns
    {label: (old hash, spec data)}."""
    rows = {name: (h, spec_data(name)) for name, h in OLD_DEFAULT_HASHES.items()}
    widths = spec_data("width-sweep", {"student": {"widths": [7, 6]}})
    widths["student"]["widths"] = [7, 6]  # as the old build stored it: in the user's order
    rows["widths 7,6"] = (OLD_WIDTHS_76, widths)
    twin = spec_data("width-sweep", {"seeds_per_task": 3})
    rows["twin"] = (old_hash("width-sweep", twin), twin)
    rows["broken"] = ("0123456789abcdef", {**spec_data("width-sweep"), "retired_field": 1})
    root.mkdir(parents=True)
    with sqlite3.connect(root / DB_NAME) as conn:
        conn.executescript(OLD_SCHEMA)
        for i, (label, (h, data)) in enumerate(rows.items()):
            name = label if label in OLD_DEFAULT_HASHES else "width-sweep"
            conn.execute(
                "INSERT INTO experiments VALUES (?, ?, ?, ?, ?)",
                (h, name, json.dumps(data, sort_keys=True), "0.1.0", 1000.0 + i),
            )
        records = [{"width": 4, "member": 0, "kind": "global", "loss": 0.0}]
        for label in ("width-sweep", "twin", "broken"):
            conn.execute(
                "INSERT INTO tasks VALUES (?, ?, 'done', ?, 1.0, 2000.0, '0.1.0')",
                (rows[label][0], "m=0004/seeds=00000-00047", json.dumps(records)),
            )
    checkpoint = root / OLD_DEFAULT_HASHES["width-sweep"] / "checkpoints" / "m=0004" / "level.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text("weights")
    (root / rows["twin"][0]).mkdir()
    return rows


def snapshot(root: Path) -> tuple[list[str], list[str]]:
    """The database's full content and the store directory's file tree."""
    with sqlite3.connect(root / DB_NAME) as conn:
        # opening creates the (empty) aliases table outside the migration's transaction
        dump = [line for line in conn.iterdump() if "CREATE TABLE aliases" not in line]
        dump.append(f"user_version {conn.execute('PRAGMA user_version').fetchone()[0]}")
    return dump, sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_the_old_hashing_is_what_old_stores_hold() -> None:
    for name, h in OLD_DEFAULT_HASHES.items():
        assert old_hash(name, spec_data(name)) == h
    widths = spec_data("width-sweep", {"student": {"widths": [6, 7]}})
    widths["student"]["widths"] = [7, 6]
    assert old_hash("width-sweep", widths) == OLD_WIDTHS_76


def pins(name: str) -> dict:
    """The spec data the migrations pin for a run of ``name`` from before 0.2."""
    data: dict = dict(PINNED_FIELDS.get(name, {}))
    if name in CERTIFY_PIN:
        section = data
        for key in CERTIFY_PIN[name]:
            section = section.setdefault(key, {})
        section["certify_rounds"] = 0
    return data


def test_opening_an_old_store_renames_runs_and_keeps_old_names(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    rows = old_store(root)
    store = Store(root)
    with pytest.warns(StoreMigrationWarning) as caught:
        listed = store.experiments()  # a read: the migration happens on any open
    messages = " | ".join(str(w.message) for w in caught)
    assert rows["twin"][0] in messages and "same science" in messages
    assert "0123456789abcdef" in messages and "no longer builds" in messages

    # 0.1 ran one teacher: the migration pins teachers = 1 (PINNED_FIELDS), part of the name;
    # and it did not certify: train.certify_rounds = 0 (CERTIFY_PIN)
    new = {
        name: spec_hash(name, build(get_experiment(name).spec_type, pins(name)))
        for name in OLD_DEFAULT_HASHES
    }
    new_sweep = new["width-sweep"]
    assert new_sweep == "0e21647b4589ed92"
    expected = {new[name] for name in OLD_DEFAULT_HASHES} | {
        "06789bf27cd011a2",  # widths 6,7, in either order, one teacher
        rows["twin"][0],  # same science as the default width-sweep, which is older: kept
        "0123456789abcdef",  # no longer builds: untouched
    }
    assert {e.hash for e in listed} == expected
    # records load under the new name, and the old names resolve
    assert store.records(new_sweep) == [
        {"task": "m=0004/seeds=00000-00047", "width": 4, "member": 0, "kind": "global", "loss": 0.0}
    ]
    assert store.find("796eb455").hash == new_sweep
    assert store.find(OLD_WIDTHS_76).hash == "06789bf27cd011a2"
    assert store.find(rows["twin"][0]).hash == rows["twin"][0]
    assert len(store.records(rows["twin"][0])) == 1
    assert store.aliases()[OLD_DEFAULT_HASHES["lottery"]] == new["lottery"]
    # the run's directory (checkpoints, reports) moved with it
    assert not (root / OLD_DEFAULT_HASHES["width-sweep"]).exists()
    moved = root / new_sweep / "checkpoints" / "m=0004" / "level.pt"
    assert moved.read_text() == "weights"
    assert (root / rows["twin"][0]).is_dir()
    with sqlite3.connect(root / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    # idempotent: opening again changes nothing and warns about nothing
    before = snapshot(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Store(root).migrate() == []
        Store(root).experiments()
    assert snapshot(root) == before

    # the command line takes old and new names alike
    runner = CliRunner()
    listing = runner.invoke(main, ["list", "--store", str(root)])
    assert listing.exit_code == 0 and new_sweep in listing.output
    for name in ("796eb455", new_sweep[:8]):
        shown = runner.invoke(main, ["show", name, "--store", str(root)])
        assert shown.exit_code == 0, shown.output
        assert shown.output.startswith(f"width-sweep {new_sweep}")


def test_a_failed_migration_leaves_the_store_as_it_was(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "runs"
    old_store(root)
    before = snapshot(root)
    import escapelab.config

    calls = []

    def interrupted(name: str, spec: object) -> str:
        calls.append(name)
        if len(calls) == 3:  # after the first rows were renamed and their directory moved
            raise KeyboardInterrupt
        return spec_hash(name, spec)

    monkeypatch.setattr(escapelab.config, "spec_hash", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Store(root).migrate()
    assert snapshot(root) == before
    monkeypatch.undo()
    with pytest.warns(StoreMigrationWarning):
        report = Store(root).migrate()
    assert {r.status for r in report} == {"renamed", "kept", "unbuildable"}
    assert (
        HashMigration(
            OLD_DEFAULT_HASHES["width-sweep"], "0e21647b4589ed92", "width-sweep", "renamed"
        )
        in report
    )


def test_a_new_store_starts_at_the_current_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs")
    store.register("width-sweep", {}, "9d48a8fb2a9f19dc", "0.1.0")
    assert store.migrate() == [] and store.aliases() == {}
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_old_records_get_unambiguous_field_names(tmp_path: Path) -> None:
    """``level`` was the pruning round in lottery records and the ticket kind in
    ticket-perturbation records; a migrated store names them prune_level and ticket_kind, in
    place, and leaves other experiments' fields alone."""
    root = tmp_path / "store"
    root.mkdir()
    stored = {
        "lottery": [{"dataset": "digits", "member": 0, "level": 3, "role": "ticket"}],
        "ticket-perturbation": [{"level": "weight", "dataset": "digits", "label": "none"}],
        "width-sweep": [{"width": 4, "level": "kept as it was"}],
    }
    with sqlite3.connect(root / DB_NAME) as conn:
        conn.executescript(OLD_SCHEMA)
        for i, (name, records) in enumerate(stored.items()):
            h = OLD_DEFAULT_HASHES[name]
            conn.execute(
                "INSERT INTO experiments VALUES (?, ?, ?, ?, ?)",
                (h, name, json.dumps(spec_data(name)), "0.1.0", 1000.0 + i),
            )
            conn.execute(
                "INSERT INTO tasks VALUES (?, 'data=digits/seeds=00000-00000', 'done', ?, 1.0, "
                "2000.0, '0.1.0')",
                (h, json.dumps(records)),
            )
    store = Store(root)
    lottery = store.records(store.find(OLD_DEFAULT_HASHES["lottery"]).hash)
    assert lottery == [
        {"task": "data=digits/seeds=00000-00000", "dataset": "digits", "member": 0,
         "prune_level": 3, "role": "ticket"}
    ]  # fmt: skip
    assert list(lottery[0]) == ["task", "dataset", "member", "prune_level", "role"]
    perturbation = store.records(store.find(OLD_DEFAULT_HASHES["ticket-perturbation"]).hash)
    assert perturbation[0]["ticket_kind"] == "weight" and "level" not in perturbation[0]
    sweep = store.records(store.find(OLD_DEFAULT_HASHES["width-sweep"]).hash)
    assert sweep[0]["level"] == "kept as it was"


def test_runs_from_before_certification_by_default_keep_their_meaning(tmp_path: Path) -> None:
    """A schema-4 store holds a default width-sweep (then: no certification) under the default
    name; certification is the default now, so the run is renamed to say it did not certify,
    and the default spec no longer finds it (it would, wrongly, return uncertified records)."""
    root = tmp_path / "runs"
    root.mkdir()
    default = spec_hash("width-sweep", build(get_experiment("width-sweep").spec_type, {}))
    data = to_dict(build(get_experiment("width-sweep").spec_type, {}))
    data["train"]["certify_rounds"] = 0
    with sqlite3.connect(root / DB_NAME) as conn:
        conn.executescript(OLD_SCHEMA)
        conn.execute(
            "INSERT INTO experiments VALUES (?, 'width-sweep', ?, '0.2.0', 1.0)",
            (default, json.dumps(data, sort_keys=True)),
        )
        conn.execute(
            "INSERT INTO tasks VALUES (?, 'm=0004/seeds=00000-00047', 'done', '[]', 1, 2, '0.2.0')",
            (default,),
        )
        conn.execute("PRAGMA user_version = 4")
    store = Store(root)
    (row,) = store.experiments()
    uncertified = spec_hash(
        "width-sweep",
        build(get_experiment("width-sweep").spec_type, {"train": {"certify_rounds": 0}}),
    )
    assert row.hash == uncertified != default
    assert store.find(default).hash == uncertified  # the old name still resolves
    assert store.done_keys(default) == set()  # the default spec now runs afresh
