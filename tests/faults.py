"""Helpers of the error-catalogue tests: a tiny stored run, snapshots of a directory, and
read-only or full directories (a chmod where the tests are not root, a small tmpfs where they are
root and may mount; otherwise the test is skipped with the reason)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# a run of a few seconds: 2 widths x 2 seeds, short training
TINY_ARGS = [
    "--set",
    "teachers=1",
    "--set",
    "teacher.width=2",
    "--set",
    "student.widths=2,3",
    "--set",
    "student.seeds=2",
    "--set",
    "train.steps=50",
    "--set",
    "train.refine_steps=2",
]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (empty when it does not exist)."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _mount(target: Path, options: str) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
    )
    return result.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@contextlib.contextmanager
def read_only_dir(path: Path, populate: object = None) -> Iterator[Path]:
    """``path`` made read-only after ``populate(path)`` filled it: chmod 555 when not root, a
    tmpfs remounted read-only when root; skip when neither works."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        if callable(populate):
            populate(path)
        for p in [path, *path.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield path
        finally:
            for p in [path, *path.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
        return
    if not _mount(path, "size=16m"):
        pytest.skip("needs a non-root user (chmod) or root allowed to mount a tmpfs")
    try:
        if callable(populate):
            populate(path)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True)
        if remount.returncode != 0:
            pytest.skip("cannot remount the tmpfs read-only")
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def full_dir(path: Path, size_kb: int = 64, leave_bytes: int = 0) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` at ``path`` filled up to ``leave_bytes`` free bytes; skip when
    the tests may not mount (disk-full tests need root, or run them in CI as root)."""
    path.mkdir(parents=True, exist_ok=True)
    if not _mount(path, f"size={size_kb}k"):
        pytest.skip("a full disk is simulated with a small tmpfs: needs root allowed to mount")
    try:
        stats = os.statvfs(path)
        free = stats.f_bavail * stats.f_frsize
        with contextlib.suppress(OSError), (path / "filler").open("wb") as fh:
            fh.write(b"\0" * max(free - leave_bytes, 0))
        yield path
    finally:
        _umount(path)
