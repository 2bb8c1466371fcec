"""Benchmark: a ``ticket-dose`` run's wall time and how far its tickets resolve the doses.

Runs ``escapelab run ticket-dose`` (default spec, a preset, or the spec of a run already in the
store, ``--spec-of HASH_PREFIX``, e.g. one started with ``escapelab run ... --set``) into a store
(resumable; a finished run is only read again), then writes per ticket kind and problem: the
tickets per dose, how many doses meet the target half-width for the rate and for the paired
difference from the floor, the widest of each, the thresholds, and every floor and dose row
(counts, rate, intervals). The timing fields are those of ``benchlib.timed_run``.

Run ``python bench/bench_ticket_dose.py --store DIR [--preset P | --spec-of HASH]`` (writes
``bench/results/ticket-dose.json``, or the name given with ``--output``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from benchlib import timed_run
from escapelab.presets import preset_spec
from escapelab.runner.store import Store

ROW_FIELDS = (
    "label",
    "n",
    "failures",
    "undecided",
    "failure_rate",
    "ci_low",
    "ci_high",
    "half_width",
    "diff",
    "diff_low",
    "diff_high",
    "diff_half_width",
    "n_pairs",
    "broken_pairs",
    "mended_pairs",
    "failure_kinds",
)


def resolution(summary: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """Per ticket kind and problem: tickets per dose, the doses meeting ``target`` for the rate
    and for the difference, the widest half-widths, the thresholds and the rows."""
    out = []
    for kind, problem in dict.fromkeys((r["ticket_kind"], r["problem"]) for r in summary):
        mine = [r for r in summary if (r["ticket_kind"], r["problem"]) == (kind, problem)]
        doses = [r for r in mine if r["role"] == "dose" and r["n"]]
        floor = next(r for r in mine if r["role"] == "floor")
        out.append(
            {
                "ticket_kind": kind,
                "problem": problem,
                "members": floor["members"],
                "no_ticket": floor["no_ticket"],
                "tickets_per_dose": sorted({r["n"] for r in doses}),
                "doses": len(doses),
                "target_half_width": target,
                "rate_resolved": sum(r["resolved"] for r in doses),
                "diff_resolved": sum(r["diff_resolved"] for r in doses),
                "widest_rate_half_width": max((r["half_width"] for r in doses), default=math.nan),
                "widest_diff_half_width": max(
                    (r["diff_half_width"] for r in doses), default=math.nan
                ),
                "thresholds": {r["arm"]: r["threshold"] for r in mine if r["role"] == "threshold"},
                "rows": [
                    {k: r.get(k) for k in ROW_FIELDS} for r in mine if r["role"] != "threshold"
                ],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="bench/results/ticket-dose-store")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--spec-of", default=None, help="a run's hash prefix in --store")
    parser.add_argument("--output", default=None, help="file name under bench/results")
    args = parser.parse_args()
    if args.spec_of:
        spec = Store(args.store).find(args.spec_of).spec
    else:
        spec = preset_spec(args.preset, "ticket-dose") if args.preset else {}
    outcome, timing = timed_run("ticket-dose", spec, args.store, args.workers)
    result = {
        **timing,
        "preset": args.preset,
        "spec": spec,
        "problems": resolution(outcome.summary, outcome.spec.target_half_width),
    }
    name = args.output or (f"ticket-dose-{args.preset}.json" if args.preset else "ticket-dose.json")
    path = Path(__file__).resolve().parent / "results" / name
    path.write_text(json.dumps(result, indent=2))
    for p in result["problems"]:
        print(
            f"{p['ticket_kind']} {p['problem']}: {p['tickets_per_dose']} tickets per dose; "
            f"{p['rate_resolved']}/{p['doses']} doses within ±{p['target_half_width']:g} for the "
            f"rate, {p['diff_resolved']} for the difference; thresholds {p['thresholds']}"
        )
    print(f"wall {timing['wall_seconds_all_invocations']:.0f} s over all invocations; wrote {path}")


if __name__ == "__main__":
    main()
