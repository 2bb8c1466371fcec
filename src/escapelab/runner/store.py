"""The results store: one SQLite file per store directory, written only by the driver.

Each experiment is a row (name, spec JSON, stable hash, package version); each finished task is a
row holding all its records as JSON, written in one transaction. A sweep killed at any moment
leaves only whole tasks behind, and re-running the same spec skips the tasks already stored.
Nothing is ever unpickled: records are JSON.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_NAME = "escapelab.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    version TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    hash TEXT NOT NULL REFERENCES experiments(hash),
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    records TEXT NOT NULL,
    wall_time REAL NOT NULL,
    finished REAL NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (hash, key)
);
"""


@dataclass(frozen=True)
class ExperimentRow:
    """An experiment in the store and how many of its tasks are finished."""

    hash: str
    name: str
    spec: dict[str, Any]
    version: str
    created: float
    tasks_done: int


class Store:
    """An embedded store in directory ``root`` (created on first write)."""

    def __init__(self, root: str | Path = "escapelab-runs"):
        self.root = Path(root)
        self.path = self.root / DB_NAME

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        if write:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise LookupError(f"no store at {self.root} (run an experiment first)")
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.executescript(_SCHEMA)
            with conn:
                yield conn
        finally:
            conn.close()

    def register(self, name: str, spec: dict[str, Any], spec_hash: str, version: str) -> None:
        """Record an experiment (idempotent: the same hash is stored once)."""
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO experiments VALUES (?, ?, ?, ?, ?)",
                (spec_hash, name, json.dumps(spec, sort_keys=True), version, time.time()),
            )

    def done_keys(self, spec_hash: str) -> set[str]:
        """Keys of the finished tasks of an experiment (empty if the store does not exist yet)."""
        if not self.path.exists():
            return set()
        with self._connect() as conn:
            rows = conn.execute("SELECT key FROM tasks WHERE hash = ?", (spec_hash,)).fetchall()
        return {r[0] for r in rows}

    def save_task(
        self,
        spec_hash: str,
        key: str,
        records: list[dict[str, Any]],
        wall_time: float,
        version: str,
    ) -> None:
        """Store one finished task and all its records in a single transaction."""
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tasks VALUES (?, ?, 'done', ?, ?, ?, ?)",
                (spec_hash, key, json.dumps(records), wall_time, time.time(), version),
            )

    def records(self, spec_hash: str) -> list[dict[str, Any]]:
        """All records of an experiment, each with its task key, in task order."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key, records FROM tasks WHERE hash = ? ORDER BY key", (spec_hash,)
            ).fetchall()
        return [{"task": key, **rec} for key, blob in rows for rec in json.loads(blob)]

    def experiments(self) -> list[ExperimentRow]:
        """Every experiment in the store, newest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT e.hash, e.name, e.spec, e.version, e.created, COUNT(t.key) "
                "FROM experiments e LEFT JOIN tasks t ON t.hash = e.hash "
                "GROUP BY e.hash ORDER BY e.created DESC"
            ).fetchall()
        return [ExperimentRow(h, n, json.loads(s), v, c, k) for h, n, s, v, c, k in rows]

    def find(self, prefix: str) -> ExperimentRow:
        """The experiment whose hash starts with ``prefix``; LookupError if none or several."""
        matches = [e for e in self.experiments() if e.hash.startswith(prefix)]
        if not matches:
            raise LookupError(f"no experiment in {self.root} has a hash starting with {prefix!r}")
        if len(matches) > 1:
            names = ", ".join(e.hash for e in matches)
            raise LookupError(f"hash prefix {prefix!r} is ambiguous: {names}")
        return matches[0]

    def task_times(self, spec_hash: str) -> dict[str, float]:
        """Wall time of every finished task, by key."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key, wall_time FROM tasks WHERE hash = ?", (spec_hash,)
            ).fetchall()
        return dict(rows)


def export_records(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write records to CSV, or to Parquet when ``path`` ends in .parquet (needs pyarrow)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for rec in records:
        columns.extend(k for k in rec if k not in columns)
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise LookupError(
                "Parquet export needs pyarrow: pip install 'escapelab[parquet]', or export CSV"
            ) from None
        table = pa.table({c: [rec.get(c) for rec in records] for c in columns})
        pq.write_table(table, out)
        return out
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for rec in records:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in rec.items()}
            )
    return out
