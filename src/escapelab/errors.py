"""What can go wrong for a user, and how each failure is reported: one line and an exit code.

Two kinds of failure reach a user. A mistake in the input (a value out of range, an unknown key,
a spec too large for the machine) is a :class:`~escapelab.config.SpecError` (a ``ValueError``) or a
``LookupError``: change the command and it goes away; exit code :data:`EXIT_USAGE`. A fault of the
environment (a read-only or full disk, a missing permission, a damaged store, a missing optional
package) is an :class:`EnvironmentFault`: the command was right, the machine or the files are not;
exit code :data:`EXIT_ENVIRONMENT`. An interruption (Ctrl-C, SIGTERM) is a :class:`RunInterrupted`
and exits 128 + the signal number, as shells do. :func:`user_message` turns any of them, and the
``OSError`` and ``sqlite3.Error`` they come from, into the one line the command line prints.
"""

from __future__ import annotations

import errno
import signal
import sqlite3
from pathlib import Path

EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL = 1
EXIT_TASKS_FAILED = 4  # the run ended; some tasks raised (logged, retried by a rerun)
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class EnvironmentFault(RuntimeError):
    """A fault outside the user's input: ``what`` (a path, a package, a device) and what to do."""

    def __init__(self, what: str, problem: str, advice: str):
        super().__init__(f"{what}: {problem}; {advice}")
        self.what, self.problem, self.advice = what, problem, advice


class StoreDamaged(EnvironmentFault):
    """The store's database file is damaged, empty or of an unknown version."""

    def __init__(self, path: Path | str, problem: str):
        root = Path(path).parent
        super().__init__(
            str(path),
            problem,
            f"check it with `escapelab store check {root}` and salvage what is readable with "
            f"`escapelab store recover {root} --into NEW_DIR`",
        )


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal, after saving every finished task; ``str`` says what is kept."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(self.signum)


# errno -> (what happened, what to do); the advice names the option that moves the output
_OS_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write elsewhere"),
    errno.EFBIG: ("file too large for this file system", "write elsewhere"),
    errno.EROFS: ("read-only file system", "write elsewhere"),
    errno.EACCES: ("permission denied", "fix the permissions or write elsewhere"),
    errno.EPERM: ("operation not permitted", "fix the permissions or write elsewhere"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.ENOTDIR: ("a part of the path is a file, not a directory", "check the path"),
    errno.EISDIR: ("is a directory, a file was expected", "check the path"),
}


def os_fault(err: OSError, what: str | Path | None = None, hint: str = "") -> EnvironmentFault:
    """An ``OSError`` as a one-line :class:`EnvironmentFault` naming the path and what to do;
    ``hint`` (e.g. "choose another --out") is added to the advice."""
    problem, advice = _OS_FAULTS.get(err.errno or -1, (err.strerror or str(err), "check the path"))
    where = str(what or err.filename or "file system")
    return EnvironmentFault(where, problem, f"{advice}{f' ({hint})' if hint else ''}")


def sqlite_fault(err: sqlite3.Error, db_path: Path) -> EnvironmentFault:
    """An error of SQLite on the store file ``db_path`` as an :class:`EnvironmentFault`: damage
    becomes :class:`StoreDamaged`, a full disk or a read-only store says so."""
    text = str(err).lower()
    root = db_path.parent
    if "full" in text:
        return EnvironmentFault(
            str(root),
            "disk full while writing the store (every finished task is kept)",
            "free some space, then rerun the same command to resume",
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return EnvironmentFault(
            str(root),
            f"the store cannot be written ({err})",
            "choose another --store or make this one writable",
        )
    if "locked" in text or "busy" in text:
        return EnvironmentFault(
            str(root),
            "the store stayed locked by another process",
            "wait for it, or use another --store",
        )
    if isinstance(err, sqlite3.DatabaseError) and not isinstance(err, sqlite3.OperationalError):
        return StoreDamaged(db_path, f"the store is damaged ({err})")
    if "disk i/o" in text or "malformed" in text:
        return StoreDamaged(db_path, f"the store is damaged ({err})")
    return EnvironmentFault(str(root), f"store error ({err})", "check the store directory")


def user_message(err: BaseException) -> tuple[int, str] | None:
    """The exit code and one-line message for a failure a user can act on; None for a bug."""
    from escapelab.config import SpecError

    if isinstance(err, RunInterrupted):
        return err.exit_code, f"interrupted: {err}"
    if isinstance(err, KeyboardInterrupt):
        return (
            EXIT_SIGINT,
            "interrupted: nothing was half-written; rerun the same command to resume",
        )
    if isinstance(err, (SpecError, LookupError, ValueError)):
        return EXIT_USAGE, f"error: {err}"
    if isinstance(err, EnvironmentFault):
        return EXIT_ENVIRONMENT, f"error: {err}"
    if isinstance(err, OSError):
        return EXIT_ENVIRONMENT, f"error: {os_fault(err)}"
    if isinstance(err, sqlite3.Error):  # one that escaped the store's own translation
        return EXIT_ENVIRONMENT, f"error: {sqlite_fault(err, Path('escapelab-runs', 'store'))}"
    if isinstance(err, MemoryError):
        return EXIT_ENVIRONMENT, (
            "error: out of memory; set seeds_per_task to run fewer members per task, or lower "
            "the widths or the number of samples"
        )
    if type(err).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without torch
        return EXIT_ENVIRONMENT, (
            "error: the device ran out of memory; set seeds_per_task to run fewer members per "
            "task, or use --device cpu"
        )
    return None


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(text.split())
