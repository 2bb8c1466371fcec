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

``floor`` (also alone: ``--only-floor``) asks what the speedup could be at best on this machine.
It times, interleaved, one training step as ``fit`` runs it (evaluation every 100 steps
included, masks at pruned levels) at the member counts the two arms use -- 1 and 3 networks per
seed, 8 and 24 in the ensemble -- and the matrix products alone of the ensemble's step (the
same ``baddbmm``/``bmm`` shapes, nothing else). If the ensemble's step cost nothing but its
matrix products while the per-seed steps kept their measured cost, the speedup would be
``per-seed step time / ensemble GEMM time``: an upper bound for any implementation that keeps
these products (as long as they are computed at the speed of the BLAS measured here).
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
from escapelab.optim.minibatch import fit as fit_members
from escapelab.tickets.imp import IMPConfig, prunable_names, run_imp

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


def gemm_seconds(model: StackedModel, members: int, batch: int, reps: int) -> float:
    """Seconds per training step of the matrix products alone of ``members`` MLPs at ``batch``
    samples, in the layout the stacked pass uses (feature-major): per Linear layer (out, in) the
    forward ``baddbmm``, the weight gradient and, except for the first layer, the input
    gradient; fastest of three runs of ``reps`` steps."""
    calls = []
    for i, name in enumerate(prunable_names(model)):
        n_out, n_in = model.shapes[name]
        weight, bias = torch.randn(members, n_out, n_in), torch.randn(members, n_out, 1)
        inputs, grad = torch.randn(members, n_in, batch), torch.randn(members, n_out, batch)
        weight_grad = torch.empty_like(weight)
        calls.append(lambda w=weight, b=bias, h=inputs: torch.baddbmm(b, w, h))
        calls.append(lambda g=grad, h=inputs, o=weight_grad: torch.bmm(g, h.transpose(1, 2), out=o))
        if i > 0:
            calls.append(lambda w=weight, g=grad: torch.bmm(w.transpose(1, 2), g))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            for call in calls:
                call()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def step_seconds(model: StackedModel, data: Any, members: int, masked: bool, steps: int) -> float:
    """Seconds per step of ``fit`` training ``members`` networks for ``steps`` steps
    (evaluation every 100 steps, as the benchmark runs it; half the weights masked if
    ``masked``, as at a pruned level)."""
    seeds = list(range(members))
    params = model.init(seeds)
    gen = torch.Generator().manual_seed(0)
    names = prunable_names(model) if masked else []
    masks = {n: torch.rand(params[n].shape, generator=gen) < 0.5 for n in names}
    config = FitConfig(steps=steps, eval_every=100)
    start = time.perf_counter()
    fit_members(model, params, data, config, seeds, masks or None)
    return (time.perf_counter() - start) / steps


def floor(model: StackedModel, data: Any, seeds: int, levels: int, rounds: int) -> dict[str, Any]:
    """The best speedup the ensemble could reach if its steps cost only their matrix products
    (see the module docstring): per step, fastest of ``rounds`` interleaved rounds."""
    members = {
        ("per_seed", "dense"): 1,
        ("per_seed", "pruned"): 3,
        ("ensemble", "dense"): seeds,
        ("ensemble", "pruned"): 3 * seeds,
    }
    step = dict.fromkeys(members, float("inf"))
    gemm = dict.fromkeys(("dense", "pruned"), float("inf"))
    batch = FitConfig().batch_size  # what step_seconds trains with
    fit_members(model, model.init([0]), data, FitConfig(steps=20, eval_every=10), [0])
    for _ in range(rounds):
        for (arm, phase), count in members.items():
            step[arm, phase] = min(
                step[arm, phase], step_seconds(model, data, count, phase == "pruned", 300)
            )
            if arm == "ensemble":
                gemm[phase] = min(gemm[phase], gemm_seconds(model, count, batch, 100))
    per_seed_run = seeds * (step["per_seed", "dense"] + levels * step["per_seed", "pruned"])
    ensemble_run = step["ensemble", "dense"] + levels * step["ensemble", "pruned"]
    gemm_run = gemm["dense"] + levels * gemm["pruned"]
    return {
        "step_ms": {f"{a}_{p}_{members[a, p]}": 1e3 * t for (a, p), t in step.items()},
        "ensemble_gemm_ms": {
            f"ensemble_{p}_{members['ensemble', p]}": 1e3 * t for p, t in gemm.items()
        },
        "rounds": rounds,
        "speedup_of_these_steps": per_seed_run / ensemble_run,
        "speedup_if_only_gemms": per_seed_run / gemm_run,
        "gemm_share_of_ensemble_step": gemm_run / ensemble_run,
    }


def compare(
    model: StackedModel, data: Any, fit: FitConfig, config: IMPConfig, seeds: list[int]
) -> dict[str, Any]:
    """The three arms timed one after the other (after a short warm-up run): their timings,
    speedups and how far their records drift apart."""
    run_imp(model, data, FitConfig(steps=20, eval_every=10), IMPConfig(levels=1), seeds[:2])
    ensemble_records, ensemble = timed_imp(model, data, fit, config, seeds)
    per_seed_records: list[dict[str, Any]] = []
    per_seed = {
        "wall_s": 0.0,
        "cpu_s": 0.0,
        "level_s": [0.0] * (config.levels + 1),
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
    return {
        "ensemble": ensemble,
        "per_seed": per_seed,
        "per_network": per_network,
        "speedup": per_seed["wall_s"] / ensemble["wall_s"],
        "speedup_vs_per_network": per_network["wall_s"] / ensemble["wall_s"],
        "cpu_speedup": per_seed["cpu_s"] / ensemble["cpu_s"],
        "agreement": drift(ensemble_records, per_seed_records),
        "agreement_per_network": drift(ensemble_records, network_records),
        "dense_test_acc_es": [r["test_acc_es"] for r in ensemble_records if r["prune_level"] == 0],
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
    parser.add_argument(
        "--only-floor", action="store_true", help="only the upper-bound study (about 2 minutes)"
    )
    parser.add_argument("--floor-rounds", type=int, default=3)
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
    report: dict[str, Any] = {
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
        "target_speedup": 4.0,  # issue 15's target (3.0 before)
    }
    if not args.only_floor:
        report.update(compare(model, data, fit, config, seeds))
    report["floor"] = floor(model, data, args.seeds, args.levels, args.floor_rounds)
    RESULTS.mkdir(exist_ok=True)
    name = "imp-floor.json" if args.only_floor else "imp-quick.json" if args.quick else "imp.json"
    out = args.output or RESULTS / name
    out.write_text(json.dumps(report, indent=1))
    if not args.only_floor:
        ensemble, per_seed = report["ensemble"], report["per_seed"]
        print(
            f"ensemble {ensemble['wall_s']:.1f} s, per seed {per_seed['wall_s']:.1f} s, "
            f"speedup {report['speedup']:.2f}x (target 4x); one network at a time "
            f"{report['per_network']['wall_s']:.1f} s ({report['speedup_vs_per_network']:.2f}x)"
        )
    bound = report["floor"]
    print(
        f"per step: {bound['speedup_of_these_steps']:.2f}x; if the ensemble's steps cost only "
        f"their matrix products: {bound['speedup_if_only_gemms']:.2f}x "
        f"(products {100 * bound['gemm_share_of_ensemble_step']:.0f} % of its step) -> {out}"
    )
    return report


if __name__ == "__main__":
    main()
