"""The results store: one SQLite file per store directory, written only by the driver.

Each experiment is a row (name, spec JSON, stable hash, package version); each finished task is a
row holding all its records as JSON, written in one transaction. A sweep killed at any moment
leaves only whole tasks behind, and re-running the same spec skips the tasks already stored.
Nothing is ever unpickled: records are JSON.

The store carries a schema version (``PRAGMA user_version``). Stores of version 0 were written
when a run's hash covered every field of its spec; opening one (to read or write) migrates it
once, in one transaction: every experiment takes its science hash (:func:`escapelab.config.
spec_hash`), its tasks and its directory ``<store>/<hash>/`` follow, and the ``aliases`` table
records ``old -> new`` so that old names (in notes, papers, shell history) still resolve through
:meth:`Store.find`.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from escapelab.atomic import staged_file
from escapelab.errors import EnvironmentFault, StoreDamaged, os_fault, sqlite_fault

DB_NAME = "escapelab.sqlite"
# 0: hashes of the full spec; 1: science hashes (execution options and defaults left out), aliases;
# 2: unambiguous record fields (RENAMED_FIELDS); 3: stored specs pin the value of fields added
# with a default that changes their meaning (PINNED_FIELDS); 4: the claims table (concurrent
# runs on one store share the tasks); 5: teacher-student runs from before certification by
# default get ``train.certify_rounds = 0`` (CERTIFY_PIN) and are renamed by their science;
# 6: the attempts table (which worker ran each task, its wall time there, failures with errors)
SCHEMA_VERSION = 6

# Record fields renamed in schema 2, by experiment: ``level`` meant the pruning round in IMP
# records and the ticket kind (neuron or weight) in ticket-perturbation records.
# Fields added with a default that is not what older runs did, by experiment, and the value
# that is: every teacher-student experiment ran one teacher before ``teachers`` existed.
PINNED_FIELDS: dict[str, dict[str, Any]] = {
    name: {"teachers": 1} for name in ("width-sweep", "subnetworks", "escape", "minima-census")
}

# Schema 5 made certification the default of every teacher-student experiment (TrainSpec's
# certify_rounds 0 -> 6): runs stored before ran without it, whether their spec says 0 or
# predates the field.
# The path of each teacher-student experiment's ``train`` section in its spec:
CERTIFY_PIN: dict[str, tuple[str, ...]] = {
    **{name: ("train",) for name in ("width-sweep", "subnetworks", "escape", "minima-census")},
    "ticket-perturbation": ("neuron", "train"),
}

RENAMED_FIELDS: dict[str, dict[str, str]] = {
    "lottery": {"level": "prune_level"},
    "ticket-perturbation": {"level": "ticket_kind"},
}

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
CREATE TABLE IF NOT EXISTS aliases (
    old TEXT PRIMARY KEY,
    new TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    hash TEXT NOT NULL,
    key TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (hash, key)
);
CREATE TABLE IF NOT EXISTS attempts (
    hash TEXT NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    worker TEXT NOT NULL,
    wall_time REAL NOT NULL,
    error TEXT,
    finished REAL NOT NULL
);
"""
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 30.0


class StoreMigrationWarning(UserWarning):
    """A stored experiment the migration could not rename (it keeps its old hash)."""


@dataclass(frozen=True)
class HashMigration:
    """What the migration did with one stored experiment.

    ``status``: ``renamed`` (now under ``new``; ``old`` is an alias), ``kept`` (its new hash
    already names another stored experiment with the same science, so it keeps ``old`` and the
    two are not merged), ``unbuildable`` (its spec no longer builds; left untouched, ``new`` is
    None) or ``unchanged``.
    """

    old: str
    new: str | None
    experiment: str
    status: Literal["renamed", "kept", "unbuildable", "unchanged"]
    message: str = ""


@dataclass(frozen=True)
class TaskFailure:
    """A task's failed attempt: its key, the one-line error, the worker that ran it, the
    seconds it ran before failing and when it failed (Unix time)."""

    key: str
    error: str
    worker: str
    wall_time: float
    finished: float


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
    """An embedded store in directory ``root`` (created on first write).

    Every open checks the file cheaply, once per Store object: its SQLite header (a zero-byte or
    foreign file is reported, never silently recreated), its schema version (a newer one is
    refused, an older one migrated) and ``PRAGMA quick_check``; any damage found then or later
    is a :class:`~escapelab.errors.StoreDamaged` naming ``escapelab store check`` and
    ``escapelab store recover``. Other SQLite and file-system failures (read-only, full, locked)
    become one-line :class:`~escapelab.errors.EnvironmentFault` s. A new store file is built
    under a temporary name and linked into place, so concurrent first writers never see a
    half-created one.
    """

    def __init__(self, root: str | Path = "escapelab-runs"):
        self.root = Path(root)
        self.path = self.root / DB_NAME
        self._checked = False

    def create(self) -> None:
        """Make the store file atomically (schema and version set) if it does not exist."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                return
            fd, tmp = tempfile.mkstemp(prefix=".new-", suffix=".sqlite", dir=self.root)
            os.close(fd)
            try:
                conn = sqlite3.connect(tmp)
                with conn:
                    conn.executescript(_SCHEMA)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.close()
                with suppress(FileExistsError):  # another process made it first: use theirs
                    os.link(tmp, self.path)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except OSError as err:
            raise os_fault(err, self.root, "choose another --store") from None
        except sqlite3.Error as err:
            raise sqlite_fault(err, self.path) from None

    def _check_file(self) -> None:
        """The header and size of an existing store file (before SQLite reads it)."""
        try:
            with self.path.open("rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
        except OSError as err:
            raise os_fault(err, self.path, "check the --store directory") from None
        if not head:
            raise StoreDamaged(self.path, "the store file is empty (0 bytes)")
        if head != SQLITE_HEADER:
            raise StoreDamaged(self.path, "the store file is not an SQLite database (bad header)")

    def _open(self, write: bool) -> sqlite3.Connection:
        if write:
            self.create()
        elif not self.path.exists():
            raise LookupError(f"no store at {self.root} (run an experiment first)")
        if not self._checked:
            self._check_file()
        uri = f"file:{quote(str(self.path.resolve()))}" + ("" if write else "?mode=ro")
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise EnvironmentFault(
                    str(self.path),
                    f"written by a newer escapelab (store schema {version}, this version reads "
                    f"up to {SCHEMA_VERSION})",
                    "upgrade escapelab to read it",
                )
            if not self._checked:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
                if problems != ["ok"]:
                    raise StoreDamaged(self.path, f"the store is damaged ({problems[0]})")
                self._checked = True
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection in a transaction; SQLite failures become one-line faults."""
        try:
            conn = self._open(write)
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    if not write:  # the migration writes
                        conn.close()
                        conn = self._open(write=True)
                    self._upgrade(conn)
                with conn:
                    yield conn
            finally:
                conn.close()
        except sqlite3.Error as err:
            raise sqlite_fault(err, self.path) from None

    def migrate(self) -> list[HashMigration]:
        """Bring the store to the current schema now (any open does it too): what changed.

        Idempotent: a store already at :data:`SCHEMA_VERSION` is left alone and gives ``[]``.
        """
        try:
            conn = self._open(write=True)
            try:
                return self._upgrade(conn)
            finally:
                conn.close()
        except sqlite3.Error as err:
            raise sqlite_fault(err, self.path) from None

    def _upgrade(self, conn: sqlite3.Connection) -> list[HashMigration]:
        """Migrate an older store in one transaction; warn about every experiment not renamed."""
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return []
        moved: list[tuple[Path, Path]] = []
        conn.execute("BEGIN IMMEDIATE")  # one migrator at a time; others wait, then see it done
        try:
            report: list[HashMigration] = []
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for statement in filter(str.strip, _SCHEMA.split(";")):  # tables added since
                conn.execute(statement)
            if version < 3:
                _pin_added_fields(conn)
            if version < 5:
                _pin_certification(conn)
                report = self._to_science_hashes(conn, moved)
            if version < 2:
                _rename_record_fields(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.commit()
        except BaseException:
            conn.rollback()
            for old_dir, new_dir in reversed(moved):  # best effort: the store is unchanged
                if new_dir.is_dir() and not old_dir.exists():
                    new_dir.rename(old_dir)
            raise
        for item in report:
            if item.status in ("kept", "unbuildable"):
                warnings.warn(item.message, StoreMigrationWarning, stacklevel=4)
        return report

    def _to_science_hashes(
        self, conn: sqlite3.Connection, moved: list[tuple[Path, Path]]
    ) -> list[HashMigration]:
        """Schemas 0 -> 1, 2 -> 3 and 4 -> 5: rename every experiment (tasks, directory) to the
        science hash of its stored spec.

        Oldest first: when two experiments share their science (they differed only in execution
        options, width order or fields equal to their defaults), the oldest takes the new hash.
        Directories move before the commit, so a crash in between leaves them where a rerun of
        the migration (which recomputes the same renames) expects them.
        """
        from escapelab.config import build, spec_hash
        from escapelab.experiments import get_experiment

        rows = conn.execute(
            "SELECT hash, name, spec FROM experiments ORDER BY created, hash"
        ).fetchall()
        taken = {old for old, _, _ in rows}
        report = []
        for old, name, spec_json in rows:
            try:
                spec = build(get_experiment(name).spec_type, json.loads(spec_json))
                new = spec_hash(name, spec)
            except Exception as err:  # whatever the cause, a migration must not fail a store
                report.append(
                    HashMigration(
                        old,
                        None,
                        name,
                        "unbuildable",
                        f"store {self.root}: {name} {old} keeps its old hash, its spec no longer "
                        f"builds ({err})",
                    )
                )
                continue
            if new == old:
                report.append(HashMigration(old, new, name, "unchanged"))
                continue
            if new in taken:
                report.append(
                    HashMigration(
                        old,
                        new,
                        name,
                        "kept",
                        f"store {self.root}: {name} {old} has the same science as the "
                        f"experiment now named {new}; it keeps its old hash (the two are not "
                        "merged)",
                    )
                )
                continue
            conn.execute("UPDATE experiments SET hash = ? WHERE hash = ?", (new, old))
            conn.execute("UPDATE tasks SET hash = ? WHERE hash = ?", (new, old))
            conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?)", (old, new, time.time()))
            taken.discard(old)
            taken.add(new)
            message = ""
            old_dir, new_dir = self.root / old, self.root / new
            if old_dir.is_dir():
                if new_dir.exists():
                    message = f"{old_dir} left in place: {new_dir} exists"
                else:
                    old_dir.rename(new_dir)
                    moved.append((old_dir, new_dir))
            report.append(HashMigration(old, new, name, "renamed", message))
        return report

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
        worker: str = "",
    ) -> None:
        """Store one finished task and all its records in a single transaction, which also ends
        the task's claim (:meth:`claim`) and logs the attempt: ``worker`` (who ran it) and
        ``wall_time`` (seconds it took there)."""
        now = time.time()
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO tasks VALUES (?, ?, 'done', ?, ?, ?, ?)",
                (spec_hash, key, json.dumps(records), wall_time, now, version),
            )
            conn.execute(
                "INSERT INTO attempts VALUES (?, ?, 'done', ?, ?, NULL, ?)",
                (spec_hash, key, worker, wall_time, now),
            )
            conn.execute("DELETE FROM claims WHERE hash = ? AND key = ?", (spec_hash, key))

    def save_failure(
        self, spec_hash: str, key: str, error: str, wall_time: float, worker: str = ""
    ) -> None:
        """Log a task that raised (its one-line ``error``) and end its claim, in one
        transaction; the task stays unstored, so the next run of the spec retries it."""
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT INTO attempts VALUES (?, ?, 'failed', ?, ?, ?, ?)",
                (spec_hash, key, worker, wall_time, error, time.time()),
            )
            conn.execute("DELETE FROM claims WHERE hash = ? AND key = ?", (spec_hash, key))

    def failures(self, spec_hash: str) -> list[TaskFailure]:
        """The latest failed attempt of every task key of an experiment that is not stored
        (a key stored since, by a retry, is left out), oldest first."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT a.key, a.error, a.worker, a.wall_time, MAX(a.finished) FROM attempts a "
                "WHERE a.hash = ? AND a.status = 'failed' AND a.key NOT IN "
                "(SELECT key FROM tasks WHERE hash = ?) GROUP BY a.key ORDER BY 5",
                (spec_hash, spec_hash),
            ).fetchall()
        return [TaskFailure(*row) for row in rows]

    def worker_times(self, spec_hash: str) -> dict[str, tuple[int, float]]:
        """Per worker: how many tasks of the experiment it finished and their total wall time
        in seconds (from the attempts log; tasks stored before schema 6 are not in it)."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT worker, COUNT(*), SUM(wall_time) FROM attempts "
                "WHERE hash = ? AND status = 'done' GROUP BY worker ORDER BY worker",
                (spec_hash,),
            ).fetchall()
        return {worker: (count, total) for worker, count, total in rows}

    def claim(
        self,
        spec_hash: str,
        plan: Callable[[set[str]], list[Any]],
        owner: str,
        n: int,
        lease_s: float,
    ) -> tuple[list[Any], int]:
        """Claim up to ``n`` tasks of an experiment for ``owner``, for ``lease_s`` seconds.

        In one write transaction (so two claimants never take the same task): ``plan(taken)``
        gives the tasks still to run when the keys ``taken`` are stored or claimed by live
        owners (this one included); the first ``n`` are claimed. Returns them and how many
        tasks are still unstored (claimed by anyone or not), so a caller with nothing to claim
        knows whether to wait for the others. A claim is dead when its lease expired or its
        owner, a process on this host, is gone (:func:`owner_alive`); dead claims are taken over.
        """
        now = time.time()
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            done = {
                r[0] for r in conn.execute("SELECT key FROM tasks WHERE hash = ?", (spec_hash,))
            }
            claims = conn.execute(
                "SELECT key, owner, expires FROM claims WHERE hash = ?", (spec_hash,)
            ).fetchall()
            live = {k for k, who, expires in claims if expires > now and owner_alive(who)}
            todo = plan(done | live)[:n]
            conn.executemany(
                "INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                [(spec_hash, t.key, owner, now + lease_s) for t in todo],
            )
            unstored = len(plan(done))
        return todo, unstored

    def renew(self, spec_hash: str, owner: str, lease_s: float) -> None:
        """Extend every claim of ``owner`` on the experiment by ``lease_s`` from now."""
        with self._connect(write=True) as conn:
            conn.execute(
                "UPDATE claims SET expires = ? WHERE hash = ? AND owner = ?",
                (time.time() + lease_s, spec_hash, owner),
            )

    def release(self, spec_hash: str, owner: str) -> None:
        """Drop every claim of ``owner`` on the experiment (its tasks are free again)."""
        with self._connect(write=True) as conn:
            conn.execute("DELETE FROM claims WHERE hash = ? AND owner = ?", (spec_hash, owner))

    def checkpoint_dir(self, spec_hash: str, task_key: str) -> Path:
        """The directory the runner gives task ``task_key`` of a run for its checkpoints."""
        return self.root / spec_hash / "checkpoints" / task_key.replace("/", "__")

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

    def aliases(self) -> dict[str, str]:
        """Old hashes (from before a migration) and the hash each experiment has now."""
        with self._connect() as conn:
            return dict(conn.execute("SELECT old, new FROM aliases").fetchall())

    def find(self, prefix: str) -> ExperimentRow:
        """The experiment whose hash, or old hash (an alias), starts with ``prefix``;
        LookupError if none or several."""
        experiments = self.experiments()
        hits = {e.hash for e in experiments if e.hash.startswith(prefix)}
        hits |= {new for old, new in self.aliases().items() if old.startswith(prefix)}
        matches = [e for e in experiments if e.hash in hits]
        if not matches:
            raise LookupError(f"no experiment in {self.root} has a hash starting with {prefix!r}")
        if len(matches) > 1:
            names = ", ".join(e.hash for e in matches)
            raise LookupError(f"hash prefix {prefix!r} is ambiguous: {names}")
        return matches[0]

    def task_log(self, spec_hash: str) -> list[tuple[str, float, float, str]]:
        """Every finished task as (key, wall time in s, finish time as a Unix time, escapelab
        version), in order of finishing."""
        with self._connect() as conn:
            return conn.execute(
                "SELECT key, wall_time, finished, version FROM tasks WHERE hash = ? "
                "ORDER BY finished",
                (spec_hash,),
            ).fetchall()

    def task_times(self, spec_hash: str) -> dict[str, float]:
        """Wall time of every finished task, by key."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT key, wall_time FROM tasks WHERE hash = ?", (spec_hash,)
            ).fetchall()
        return dict(rows)


def new_owner() -> str:
    """A claimant's name: ``host:pid:nonce`` (the nonce tells apart runs of one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def owner_alive(owner: str) -> bool:
    """Whether a claimant may still be running: False only for a process of this host that is
    gone (so a killed run's tasks are taken over at once, not when its lease expires)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pin_added_fields(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3: a stored spec without a field of :data:`PINNED_FIELDS` gets the value
    that reproduces what it ran (the field's default would mean something else); the hashes
    are then recomputed (:meth:`Store._to_science_hashes`), the pinned value being part of the
    science."""
    for name, pins in PINNED_FIELDS.items():
        rows = conn.execute("SELECT hash, spec FROM experiments WHERE name = ?", (name,))
        for spec_hash, blob in rows.fetchall():
            spec = json.loads(blob)
            missing = {k: v for k, v in pins.items() if k not in spec}
            if missing:
                conn.execute(
                    "UPDATE experiments SET spec = ? WHERE hash = ?",
                    (json.dumps({**spec, **missing}, sort_keys=True), spec_hash),
                )


def _pin_certification(conn: sqlite3.Connection) -> None:
    """Schema 4 -> 5: every stored teacher-student spec gets ``certify_rounds = 0`` in its
    ``train`` section (at the path :data:`CERTIFY_PIN` gives) where it has none, so that the
    science hash of a run from before certification by default says it did not certify."""
    for name, path in CERTIFY_PIN.items():
        rows = conn.execute("SELECT hash, spec FROM experiments WHERE name = ?", (name,))
        for spec_hash, blob in rows.fetchall():
            spec = json.loads(blob)
            section = spec
            for key in path:
                section = section.setdefault(key, {})
            if "certify_rounds" in section:
                continue
            section["certify_rounds"] = 0
            conn.execute(
                "UPDATE experiments SET spec = ? WHERE hash = ?",
                (json.dumps(spec, sort_keys=True), spec_hash),
            )


def _rename_record_fields(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2: rename the fields of :data:`RENAMED_FIELDS` in every stored record, each
    in its place (the order of a record's fields is kept)."""
    for name, renames in RENAMED_FIELDS.items():
        rows = conn.execute(
            "SELECT t.hash, t.key, t.records FROM tasks t JOIN experiments e ON e.hash = t.hash "
            "WHERE e.name = ?",
            (name,),
        ).fetchall()
        for spec_hash, key, blob in rows:
            records = [{renames.get(k, k): v for k, v in r.items()} for r in json.loads(blob)]
            conn.execute(
                "UPDATE tasks SET records = ? WHERE hash = ? AND key = ?",
                (json.dumps(records), spec_hash, key),
            )


def export_records(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write records to CSV, or to Parquet when ``path`` ends in .parquet (needs pyarrow);
    atomically (:func:`~escapelab.atomic.staged_file`), so a failed export leaves no partial
    file. A missing pyarrow is an :class:`~escapelab.errors.EnvironmentFault`."""
    out = Path(path)
    columns: list[str] = []
    for rec in records:
        columns.extend(k for k in rec if k not in columns)
    if out.suffix.lower() == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise EnvironmentFault(
                "pyarrow",
                "not installed, and Parquet export needs it",
                "pip install 'escapelab[parquet]', or export to a .csv file",
            ) from None
        table = pa.table({c: [rec.get(c) for rec in records] for c in columns})
        with staged_file(out) as tmp:
            pq.write_table(table, tmp)
        return out
    with staged_file(out) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for rec in records:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in rec.items()}
            )
    return out
