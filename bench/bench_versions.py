"""Two source trees of escapelab timed side by side on the same workloads (before/after a change).

    python bench/bench_versions.py --tree before=/path/to/old/checkout --tree after=. --rounds 2

Each round runs every tree once, in turn, each in a fresh subprocess that imports escapelab
from ``<tree>/src`` (so the trees never share a process or a cache), on one fixed workload:

* ``train_s``: the full-batch ensemble trainer, 256 tanh students (d = 16, width 8, no biases)
  of an orthonormal width-4 teacher on N = 4,096 samples, 300 Adam steps in float32, no
  refinement;
* ``hessian_s``: exact Hessians and their eigenvalues of the 256 members (P = 136) in float64;
* ``imp_s``: IMP on the MNIST-1D MLP (40-100-100-10), 8 seeds as one ensemble, 3 levels after
  the dense one with both controls, 300 mini-batch steps per level.

Alternating the trees round by round, and keeping each tree's fastest round, is what makes the
comparison fair on a machine whose speed drifts by 20-50 % within an hour. The trees may name
their trainers differently (``escapelab.optim.train`` before 0.2, ``optim.full_batch`` after);
the worker finds either. Results: ``bench/results/versions.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib import git_info, machine_info

RESULTS = Path(__file__).parent / "results" / "versions.json"

WORKER = r"""
import importlib, json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[2]))
from escapelab.nets.mlp import Architecture
from escapelab.problems.teacher import make_teacher, student_objective
try:
    trainer = importlib.import_module("escapelab.optim.full_batch")
    minibatch = importlib.import_module("escapelab.optim.minibatch")
except ModuleNotFoundError:
    trainer = importlib.import_module("escapelab.optim.train")
    minibatch = importlib.import_module("escapelab.optim.supervised")
from escapelab.data import load_dataset
from escapelab.nets.classifiers import build_model
from escapelab.nets.stacked import StackedModel
from escapelab.tickets.imp import IMPConfig, run_imp

teacher = make_teacher(16, 4, "tanh", "orthonormal", seed=0)
arch = Architecture(16, (8,), 1, "tanh", bias=False)
objective = student_objective(teacher, arch, 4096, seed=0, dtype=torch.float32)
theta0 = arch.init(256, seed=1, dtype=torch.float32)
trainer.train(objective, theta0[:4], trainer.TrainConfig(steps=5, refine_steps=0))
start = time.perf_counter()
result = trainer.train(objective, theta0, trainer.TrainConfig(steps=300, refine_steps=0))
train_s = time.perf_counter() - start
theta = result.theta.double()
objective64 = objective.to(torch.float64)
start = time.perf_counter()
eigs = torch.linalg.eigvalsh(objective64.hessian(theta))
hessian_s = time.perf_counter() - start

data = load_dataset("mnist1d", seed=0)
model = StackedModel(lambda: build_model("mlp", data.input_shape, 10))
fit = minibatch.FitConfig(steps=300, eval_every=100)
run_imp(model, data, minibatch.FitConfig(steps=10, eval_every=10), IMPConfig(levels=1), [0, 1])
start = time.perf_counter()
records = run_imp(model, data, fit, IMPConfig(levels=3), list(range(8))).records
imp_s = time.perf_counter() - start
print(json.dumps({
    "train_s": train_s,
    "hessian_s": hessian_s,
    "imp_s": imp_s,
    "final_loss_mean": float(result.loss.double().mean()),
    "eig_min_mean": float(eigs[:, 0].mean()),
    "imp_records": len(records),
}))
"""


def run_tree(src: Path, threads: int) -> dict[str, Any]:
    """One worker subprocess on ``src``; its JSON line."""
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(src), str(threads)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree", action="append", required=True, metavar="NAME=PATH", help="a checkout to time"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (fastest kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    trees = {}
    for item in args.tree:
        name, sep, path = item.partition("=")
        if not sep or not (Path(path) / "src" / "escapelab").is_dir():
            parser.error(f"--tree {item!r}: expected NAME=PATH of an escapelab checkout")
        trees[name] = Path(path).resolve() / "src"
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name, src in trees.items():
            rounds[name].append(run_tree(src, args.threads))
            print(f"round {r + 1} {name}: {json.dumps(rounds[name][-1])}", flush=True)
    best = {
        name: {key: min(run[key] for run in runs) for key in ("train_s", "hessian_s", "imp_s")}
        for name, runs in rounds.items()
    }
    report = {
        "benchmark": "escapelab source trees side by side",
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "machine": machine_info(),
        "threads": args.threads,
        "trees": {name: str(src.parent) for name, src in trees.items()},
        "rounds": rounds,
        "fastest": best,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    for name, times in best.items():
        print(name, " ".join(f"{k}={v:.2f}" for k, v in times.items()))
    return report


if __name__ == "__main__":
    main()
