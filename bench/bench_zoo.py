"""Wall time of the zoo's two sweeps at their default settings (or ``--quick``).

double-descent: one run per packing (buckets, one ensemble, one width at a time) of the same
spec, so the speed-up of training the widths together is measured on identical work.
random-features: the default sweep end to end (theory included), then its simulation alone
with the share of time spent making features and kernels and in the spectral solves.

    PYTHONPATH=src python bench/bench_zoo.py [--quick] [--steps N] [--threads T]

Writes bench/results/zoo[-quick].json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchlib import git_info, machine_info
from escapelab.config import build
from escapelab.experiments.random_features import RandomFeaturesSpec, simulate
from escapelab.runner.sweep import run


def _timed(name: str, spec: dict) -> float:
    with tempfile.TemporaryDirectory() as store:
        start = time.perf_counter()
        run(name, spec, store=store, progress=False)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer steps and points")
    parser.add_argument("--steps", type=int, default=None, help="double-descent SGD steps")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (200 if args.quick else 4000)
    results: dict = {**machine_info(), **git_info(), "double_descent_steps": steps}
    dd = {"fit": {"steps": steps, "eval_every": steps}, "label_noise": [0.15]}
    for packing in ("buckets", "one", "separate"):
        results[f"double_descent_{packing}_s"] = _timed(
            "double-descent", {**dd, "packing": packing}
        )
        print(packing, results[f"double_descent_{packing}_s"])
    rf = {"seeds": 2} if args.quick else {}
    results["random_features_s"] = _timed("random-features", rf)
    spec = build(RandomFeaturesSpec, rf)
    phases: dict[str, float] = {}
    start = time.perf_counter()
    for dataset in spec.datasets:
        for fmap in spec.feature_maps:
            simulate(spec, dataset, fmap, 0, spec.seeds, phases)
    sim = time.perf_counter() - start
    results["random_features_simulation_s"] = sim
    results["random_features_features_share"] = phases["features"] / sim
    results["random_features_solves_share"] = phases["solves"] / sim
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results" / ("zoo-quick.json" if args.quick else "zoo.json")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
