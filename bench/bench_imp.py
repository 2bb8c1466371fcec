"""Benchmark: IMP with the seeds as one stacked ensemble against one seed at a time.

Workload (the issue's): MNIST-1D (4,000 train / 1,000 test, 10 % of train for validation), the
MLP 40-100-100-10, Adam lr 1e-2, batches of 100, ``--steps`` per level, 10 pruning levels at 20 %
(global magnitude, rewind to init) after the dense level, 8 seeds, with both controls (random
re-init, random mask), so every pruned level trains 3 networks per seed.

* ``ensemble``  -- one ``run_imp`` call with the 8 seeds: 24 networks per level in one computation.
* ``per_seed``  -- ``run_imp`` once per seed (its ticket and controls still train together): the
  issue's "one seed at a time", and the target's baseline.
* ``per_network`` -- ``run_imp`` with ``max_members=1``: every network trained alone, as a loop
  over seeds and controls would.

Both derive every random choice from (seed, level, role), so they train the same networks; the
script reports how far their records drift apart (float32 sums in another order) next to the
times: total wall time, time per level, speedup. Writes ``bench/results/imp.json``
(``--quick``: ``imp-quick.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from benchlib import git_info, machine_busy_seconds, machine_info
from escapelab.data.datasets import load_dataset
from escapelab.nets.classifiers import build_model
from escapelab.nets.stacked import StackedModel
from escapelab.optim.minibatch import FitConfig
from escapelab.tickets.imp import IMPConfig, run_imp

RESULTS = Path(__file__).resolve().parent / "results"


def timed_imp(
    model: StackedModel,
    data: Any,
    fit: FitConfig,
    config: IMPConfig,
    seeds: list[int],
    max_members: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run IMP; return its records and {wall_s, cpu_s, level_s, others_cpu_share}."""
    level_times: list[float] = []
    mark = [time.perf_counter()]

    def on_level(_level: int, _records: list[dict[str, Any]]) -> None:
        now = time.perf_counter()
        level_times.append(now - mark[0])
        mark[0] = now

    busy0, cpu0, wall0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
    records = run_imp(
        model, data, fit, config, seeds, on_level=on_level, max_members=max_members
    ).records
    wall = time.perf_counter() - wall0
    cpu, busy1 = time.process_time() - cpu0, machine_busy_seconds()
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0 - cpu) / (wall * (os.cpu_count() or 1)))
    timing = {"wall_s": wall, "cpu_s": cpu, "level_s": level_times, "others_cpu_share": others}
    return records, timing


def drift(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """How the ensemble's records differ from the per-seed ones, matched by (level, role, seed)."""
    key = ("prune_level", "role", "seed")
    other = {tuple(r[k] for k in key): r for r in b}
    acc = [abs(r["test_acc_es"] - other[tuple(r[k] for k in key)]["test_acc_es"]) for r in a]
    dens = [abs(r["density"] - other[tuple(r[k] for k in key)]["density"]) for r in a]
    return {
        "records": len(a),
        "max_abs_test_acc_es_diff": max(acc),
        "mean_abs_test_acc_es_diff": sum(acc) / len(acc),
        "identical_test_acc_es": sum(x == 0 for x in acc) / len(acc),
        "max_abs_density_diff": max(dens),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per level")
    parser.add_argument("--levels", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="2 levels, 100 steps, 4 seeds")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.levels, args.seeds = 100, 2, 4
    data = load_dataset("mnist1d", seed=0)
    model = StackedModel(lambda: build_model("mlp", data.input_shape, data.n_classes))
    fit = FitConfig(steps=args.steps, eval_every=100)
    config = IMPConfig(levels=args.levels)
    seeds = list(range(args.seeds))
    run_imp(model, data, FitConfig(steps=20, eval_every=10), IMPConfig(levels=1), seeds[:2])
    ensemble_records, ensemble = timed_imp(model, data, fit, config, seeds)
    per_seed_records: list[dict[str, Any]] = []
    per_seed = {
        "wall_s": 0.0,
        "cpu_s": 0.0,
        "level_s": [0.0] * (args.levels + 1),
        "others_cpu_share": [],
    }
    for seed in seeds:
        records, timing = timed_imp(model, data, fit, config, [seed])
        per_seed_records += records
        per_seed["wall_s"] += timing["wall_s"]
        per_seed["cpu_s"] += timing["cpu_s"]
        per_seed["level_s"] = [
            a + b for a, b in zip(per_seed["level_s"], timing["level_s"], strict=True)
        ]
        per_seed["others_cpu_share"].append(timing["others_cpu_share"])
    network_records, per_network = timed_imp(model, data, fit, config, seeds, max_members=1)
    report = {
        "benchmark": "imp",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "machine": machine_info(),
        "workload": {
            "data": "mnist1d",
            "model": "mlp 40-100-100-10",
            "seeds": args.seeds,
            "levels": args.levels,
            "steps_per_level": args.steps,
            "networks_per_pruned_level": 3 * args.seeds,
        },
        "ensemble": ensemble,
        "per_seed": per_seed,
        "per_network": per_network,
        "speedup": per_seed["wall_s"] / ensemble["wall_s"],
        "speedup_vs_per_network": per_network["wall_s"] / ensemble["wall_s"],
        "cpu_speedup": per_seed["cpu_s"] / ensemble["cpu_s"],
        "target_speedup": 4.0,  # issue 15's target (3.0 before)
        "agreement": drift(ensemble_records, per_seed_records),
        "agreement_per_network": drift(ensemble_records, network_records),
        "dense_test_acc_es": [r["test_acc_es"] for r in ensemble_records if r["prune_level"] == 0],
    }
    RESULTS.mkdir(exist_ok=True)
    out = args.output or RESULTS / ("imp-quick.json" if args.quick else "imp.json")
    out.write_text(json.dumps(report, indent=1))
    print(
        f"ensemble {ensemble['wall_s']:.1f} s, per seed {per_seed['wall_s']:.1f} s, "
        f"speedup {report['speedup']:.2f}x (target 4x); one network at a time "
        f"{per_network['wall_s']:.1f} s ({report['speedup_vs_per_network']:.2f}x); per level "
        f"{ensemble['wall_s'] / (args.levels + 1):.2f} s vs "
        f"{per_seed['wall_s'] / (args.levels + 1):.2f} s -> {out}"
    )
    return report


if __name__ == "__main__":
    main()
