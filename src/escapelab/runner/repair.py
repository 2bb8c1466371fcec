"""Check a store for damage, and salvage every readable run and task of a damaged one.

:func:`check_store` runs SQLite's full ``PRAGMA integrity_check`` (the open of a
:class:`~escapelab.runner.store.Store` runs only the cheaper ``quick_check``). :func:`recover_store`
copies what can still be read into a fresh store and says what was lost:

1. a copy of the damaged file is made; if its 100-byte header is unreadable (garbage written over
   it) the header of an empty database is put in its place, since the pages behind it are often
   intact (SQLite file format, section 1.3: the header is the first 100 bytes of page 1, the
   schema b-tree starts behind it);
2. every row of ``experiments``, ``tasks`` and ``aliases`` is read by rowid, one at a time, so a
   damaged page loses only the rows stored on it; a task whose records are not valid JSON, or
   whose experiment was lost, is lost too;
3. the keys listed in the tasks' primary-key index name the tasks that were there but could not
   be read. Rerunning an experiment into the new store recomputes exactly those.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from escapelab.config import SpecError
from escapelab.runner.store import DB_NAME, SCHEMA_VERSION, SQLITE_HEADER, Store

# stop probing rowids after this many misses in a row when the largest rowid is unreadable
_MISSES = 256


@dataclass(frozen=True)
class StoreCheck:
    """The result of :func:`check_store`: ``problems`` is empty for a sound store."""

    path: Path
    problems: list[str]
    version: int | None = None
    experiments: int | None = None
    tasks: int | None = None

    @property
    def ok(self) -> bool:
        """True when SQLite found nothing wrong."""
        return not self.problems


@dataclass
class Recovery:
    """What :func:`recover_store` saved and lost."""

    source: Path
    target: Path
    experiments: int = 0
    tasks: int = 0
    records: int = 0
    aliases: int = 0
    lost_experiments: int = 0
    lost_tasks: list[str] = field(default_factory=list)
    header_rebuilt: bool = False


def check_store(root: str | Path) -> StoreCheck:
    """Header, schema version, ``PRAGMA integrity_check`` and row counts of the store in
    ``root``; LookupError when there is no store file."""
    path = Path(root) / DB_NAME
    if not path.exists():
        raise LookupError(f"no store at {root} ({DB_NAME} missing)")
    with path.open("rb") as fh:
        head = fh.read(len(SQLITE_HEADER))
    if not head:
        return StoreCheck(path, ["the store file is empty (0 bytes)"])
    if head != SQLITE_HEADER:
        return StoreCheck(path, ["the file header is not SQLite's (garbage over the header)"])
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        return StoreCheck(path, [str(err)])
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
        problems = [] if problems == ["ok"] else problems
        if version > SCHEMA_VERSION:
            problems.append(f"schema {version} is newer than this escapelab ({SCHEMA_VERSION})")
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in _TABLES[:2]]
        return StoreCheck(path, problems, version, *counts)
    except sqlite3.Error as err:
        return StoreCheck(path, [str(err)])
    finally:
        conn.close()


_TABLES = ("experiments", "tasks", "aliases")
_COLUMNS = {
    "experiments": "hash, name, spec, version, created",
    "tasks": "hash, key, status, records, wall_time, finished, version",
    "aliases": "old, new, created",
}


def _empty_header() -> bytes:
    """The 100-byte header of a fresh SQLite database with the default page size."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "empty.sqlite"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
        conn.close()
        return path.read_bytes()[:100]


def _readable(path: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
        return True
    except sqlite3.Error:
        return False


def _rows(conn: sqlite3.Connection, table: str) -> Iterator[tuple[Any, ...]]:
    """Every readable row of ``table``, probed one rowid at a time."""
    try:
        top = conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0]
    except sqlite3.Error:
        top = None
    rowid, misses = 0, 0
    while (top is not None and rowid < top) or (top is None and misses < _MISSES):
        rowid += 1
        try:
            row = conn.execute(
                f"SELECT {_COLUMNS[table]} FROM {table} WHERE rowid = ?", (rowid,)
            ).fetchone()
        except sqlite3.Error:
            row = None
        misses = 0 if row is not None else misses + 1
        if row is not None:
            yield row


def _indexed_task_keys(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """(hash, key) of every task the primary-key index lists (empty if it is unreadable)."""
    try:
        rows = conn.execute("SELECT hash, key FROM tasks INDEXED BY sqlite_autoindex_tasks_1")
        return {(h, k) for h, k in rows.fetchall()}
    except sqlite3.Error:
        return set()


def recover_store(source: str | Path, into: str | Path) -> Recovery:
    """Copy every readable experiment, task and alias of the store in ``source`` into a new
    store in ``into`` (which must not hold one), with the experiments' directories; returns
    what was saved and the keys of the tasks lost."""
    src, dst = Path(source), Path(into)
    src_db = src / DB_NAME
    if not src_db.exists():
        raise LookupError(f"no store at {src} ({DB_NAME} missing)")
    if (dst / DB_NAME).exists():
        raise SpecError("--into", f"{dst} already holds a store; name a new directory")
    if dst.resolve() == src.resolve():
        raise SpecError("--into", "must be another directory than the damaged store")
    report = Recovery(src, dst)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / DB_NAME
        shutil.copyfile(src_db, copy)
        if copy.stat().st_size >= 100 and not _readable(copy):
            header = bytearray(_empty_header())
            page_size = int.from_bytes(header[16:18], "big")
            # the database size in pages (offset 28): the file's, not the empty database's
            header[28:32] = (copy.stat().st_size // page_size).to_bytes(4, "big")
            with copy.open("r+b") as fh:
                fh.write(bytes(header))
            report.header_rebuilt = True
        rows: dict[str, list[tuple[Any, ...]]] = {table: [] for table in _TABLES}
        listed: set[tuple[str, str]] = set()
        # a rebuilt header lost the schema version: 0 makes the new store run every migration,
        # each of which leaves rows of the current schema unchanged
        version = 0
        if copy.stat().st_size > 0 and _readable(copy):
            conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
            try:
                if not report.header_rebuilt:
                    version = min(conn.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
                rows = {table: list(_rows(conn, table)) for table in _TABLES}
                listed = _indexed_task_keys(conn)
            finally:
                conn.close()
    experiments = {}
    for row in rows["experiments"]:
        try:
            json.loads(row[2])
            experiments[row[0]] = row
        except (TypeError, ValueError):
            report.lost_experiments += 1
    tasks = []
    for row in rows["tasks"]:
        try:
            count = len(json.loads(row[3]))
        except (TypeError, ValueError):
            continue
        if row[0] in experiments:
            tasks.append(row)
            report.records += count
    saved = {(row[0], row[1]) for row in tasks}
    report.lost_tasks = sorted(f"{h}/{k}" for h, k in listed - saved)
    report.lost_tasks += sorted(
        f"{row[0]}/{row[1]}" for row in rows["tasks"] if (row[0], row[1]) not in saved | listed
    )
    Store(dst).create()
    with sqlite3.connect(dst / DB_NAME) as conn:
        conn.executemany("INSERT INTO experiments VALUES (?, ?, ?, ?, ?)", experiments.values())
        conn.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?)", tasks)
        conn.executemany("INSERT OR IGNORE INTO aliases VALUES (?, ?, ?)", rows["aliases"])
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    for spec_hash in experiments:
        if (src / spec_hash).is_dir():
            shutil.copytree(src / spec_hash, dst / spec_hash, dirs_exist_ok=True)
    report.experiments, report.tasks, report.aliases = (
        len(experiments),
        len(tasks),
        len(rows["aliases"]),
    )
    return report
