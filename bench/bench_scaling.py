"""Benchmark: the default ``scaling`` run's wall time and how its adaptive seeding spends it.

Runs ``escapelab run scaling`` (default spec, or a preset) into a store (resumable: rerun after
an interruption; a finished store is only read again), then reports per chosen problem and width
the seeds the adaptive stages gave it and the stop each width reached, the students and
sub-networks trained, members per second over the invocation's wall time, and the compute in
each training phase (from the records' ``seconds_*``). Members per second are over the wall
time of every invocation that ran tasks of the spec (the store's provenance log), so a run
resumed after an interruption, or measured earlier with ``escapelab run scaling`` on the same
store, is counted whole. The CPU may be shared: the 1-minute load average before and after
this invocation is part of the result, and the provenance entries carry each invocation's.

Run ``python bench/bench_scaling.py`` (writes ``bench/results/scaling.json``; with
``--preset P``, ``scaling-P.json``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import timed_run
from escapelab.presets import preset_spec

PHASES = ("first_order", "refine", "certify", "classify")


def spending(
    summary: list[dict[str, Any]], records: list[dict[str, Any]], search_seeds: int
) -> dict[str, Any]:
    """Seeds and stops per problem and width, members trained (the search's apart), compute
    per phase."""
    widths: dict[str, dict[str, Any]] = {}
    for r in summary:
        if r["role"] == "width":
            widths.setdefault(r["problem"], {})[str(r["width"])] = {
                "seeds": r["seeds"],
                "failures": r["failures"],
                "stop": r["stop"],
            }
    students = [r for r in records if r.get("role") == "student"]
    subnets = [r for r in records if r.get("role") == "subnetworks"]
    phases = {p: sum(float(r.get(f"seconds_{p}", 0.0)) for r in students) for p in PHASES}
    return {
        "seeds_per_width": widths,
        "students": len(students),
        "search_students": sum(
            r["width"] == r["r_star"] and r["member"] < search_seeds for r in students
        ),
        "subnetworks_trained": sum(r["n_subsets"] for r in subnets),
        "stops": dict(Counter(r["stop"] for r in summary if r["role"] == "width")),
        "student_compute_seconds": phases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="bench/results/scaling-store")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default=None)
    args = parser.parse_args()
    spec = preset_spec(args.preset, "scaling") if args.preset else {}
    outcome, timing = timed_run("scaling", spec, args.store, args.workers)
    spent = spending(outcome.summary, outcome.records, outcome.spec.search.seeds)
    members = spent["students"] + spent["subnetworks_trained"]
    run_wall = timing["wall_seconds_all_invocations"]
    result = {
        **timing,
        "preset": args.preset or "default",
        "members_per_second": members / run_wall if run_wall else None,
        **spent,
    }
    name = f"scaling-{args.preset}.json" if args.preset else "scaling.json"
    path = Path(__file__).resolve().parent / "results" / name
    path.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "wall_seconds_all_invocations",
                    "members_per_second",
                    "students",
                    "subnetworks_trained",
                    "stops",
                )
            },
            indent=2,
        )
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
