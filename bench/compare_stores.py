"""Are two stores' records the same? The check that a refactoring changed no result.

    python bench/compare_stores.py BEFORE_STORE AFTER_STORE [--out results/records-diff.json]

Both stores are read directly and read-only (no migration runs). Experiments are paired by name
(one run of each experiment per store, e.g. the default specs run before and after a change);
records are paired by their task key and position. Old field names are mapped to today's
(:data:`escapelab.runner.store.RENAMED_FIELDS`), and timing fields (``wall_time``,
``seconds_*``) are left out, since they measure the machine. For each experiment the report
gives the number of records, how many are identical, and for the others the fields that differ
with the largest absolute difference of each numeric field.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

from escapelab.runner.store import DB_NAME, RENAMED_FIELDS

TIMING_FIELDS = ("wall_time",)
TIMING_PREFIX = "seconds_"  # per-member phase times


def read_store(root: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Experiment name -> [(task key, record)] of a store, read-only."""
    uri = f"file:{(root / DB_NAME).resolve()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        rows = conn.execute(
            "SELECT e.name, t.key, t.records FROM tasks t JOIN experiments e ON e.hash = t.hash "
            "ORDER BY e.name, t.key"
        ).fetchall()
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, key, blob in rows:
        renames = RENAMED_FIELDS.get(name, {})
        for record in json.loads(blob):
            clean = {
                renames.get(k, k): v
                for k, v in record.items()
                if k not in TIMING_FIELDS and not k.startswith(TIMING_PREFIX)
            }
            out.setdefault(name, []).append((key, clean))
    return out


def _differences(a: Any, b: Any, path: str, out: dict[str, float]) -> None:
    """Record in ``out`` every leaf where a and b differ: |a - b| for numbers, inf otherwise."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            _differences(a.get(key), b.get(key), f"{path}.{key}" if path else key, out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b, strict=True):
            _differences(x, y, path, out)
    elif a != b and not (a != a and b != b):  # nan == nan here
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        gap = abs(a - b) if numbers else math.inf
        out[path] = max(out.get(path, 0.0), gap)


def compare(before: Path, after: Path) -> dict[str, Any]:
    """Per experiment: records before and after, identical ones, and the differing fields."""
    old, new = read_store(before), read_store(after)
    report = {}
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name, []), new.get(name, [])
        diffs: dict[str, float] = {}
        identical = 0
        for (key_a, rec_a), (key_b, rec_b) in zip(a, b, strict=False):
            one: dict[str, float] = {}
            _differences(rec_a, rec_b, "", one)
            if key_a != key_b:
                one["task key"] = math.inf
            identical += not one
            for field, gap in one.items():
                diffs[field] = max(diffs.get(field, 0.0), gap)
        report[name] = {
            "records_before": len(a),
            "records_after": len(b),
            "identical": identical,
            "differing_fields": diffs,
        }
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)
    report = compare(args.before, args.after)
    for name, row in report.items():
        fields = ", ".join(f"{k} (max |diff| {v:.3g})" for k, v in row["differing_fields"].items())
        print(
            f"{name}: {row['identical']} of {row['records_before']} records identical "
            f"({row['records_after']} after)" + (f"; differ: {fields}" if fields else "")
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
