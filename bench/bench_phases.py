"""Benchmark: where the default width-sweep's time goes, phase by phase.

Runs ``escapelab run width-sweep`` with the default spec (8 teachers, 7 widths, 48 students
each, certified endpoints) into a store (resumable: rerun the command after an interruption),
then adds up the per-member phase times every record carries (``seconds_first_order``,
``seconds_refine``, ``seconds_certify``, ``seconds_classify``) per width and in all, and the
share of endpoints that ended ``not_converged``. ``--seeds`` and ``--teachers`` shrink the spec
for a quick look. The CPU may be shared: the 1-minute load average before and after the run is
part of the result.

Run ``python bench/bench_phases.py`` (writes ``bench/results/phases.json``, or
``phases-quick.json`` with ``--seeds``/``--teachers``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchlib import git_info, machine_info
from escapelab.runner.sweep import run

PHASES = ("first_order", "refine", "certify", "classify")


def phase_table(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per phase (summed over members) per width and in all, with shares."""
    by_width: dict[int, dict[str, float]] = defaultdict(lambda: dict.fromkeys(PHASES, 0.0))
    for r in records:
        for phase in PHASES:
            by_width[int(r["width"])][phase] += float(r.get(f"seconds_{phase}", 0.0))
    total = {p: sum(w[p] for w in by_width.values()) for p in PHASES}
    all_seconds = sum(total.values()) or 1.0
    return {
        "per_width_seconds": {str(m): by_width[m] for m in sorted(by_width)},
        "total_seconds": total,
        "share": {p: total[p] / all_seconds for p in PHASES},
        "not_converged": sum(r["kind"] == "not_converged" for r in records) / max(1, len(records)),
        "endpoints": len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="bench/results/phases-store")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=None, help="students per width")
    parser.add_argument("--teachers", type=int, default=None)
    args = parser.parse_args()
    spec: dict[str, Any] = {}
    if args.seeds is not None:
        spec["student"] = {"seeds": args.seeds}
    if args.teachers is not None:
        spec["teachers"] = args.teachers
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    outcome = run("width-sweep", spec, store=args.store, workers=args.workers, progress=True)
    wall = time.perf_counter() - start
    result = {
        "machine": machine_info(),
        **git_info(),
        "spec": spec or "default",
        "spec_hash": outcome.spec_hash,
        "wall_seconds_this_invocation": wall,
        "tasks_run": outcome.tasks_run,
        "tasks_already_stored": outcome.tasks_skipped,
        "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0],
        **phase_table(outcome.records),
    }
    name = "phases.json" if not spec else "phases-quick.json"
    path = Path(__file__).resolve().parent / "results" / name
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("share", "total_seconds", "not_converged")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
