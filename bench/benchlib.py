"""Helpers the benchmark scripts share (imported as a sibling module: run the scripts directly)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(*args: str) -> str | None:
    """Output of ``git *args`` run next to this file, or None if git or the checkout is missing."""
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()
