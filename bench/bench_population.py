"""Benchmark: exact population losses (x ~ N(0, I_d)) beyond erf, for a whole ensemble.

For relu, erf and tanh students of width m = 9 on d = 16 inputs (no biases, P = 153) against a
teacher of 4 orthonormal units (scale 1, outgoing weights one), 256 members (glorot init, seed 0):
wall times of ``PopulationObjective.loss``, ``loss_and_grad`` and ``hessian`` in float64, each
after one warm-up call on 2 members; for erf also the generic autograd Hessian
(``Objective.hessian``) the closed form replaced, timed in the same run, and their largest
difference. Also each kernel's accuracy against Monte Carlo: 10^6
Gaussian inputs (seed 0), the kernel of 4 student rows against 4 teacher rows plus the rows
themselves, reported as the largest |exact - MC| in units of the MC standard error, and for tanh
the quadrature's own error estimate (order n vs 2n) over the first 16 members.

The CPU may be shared, so every timing carries the 1-minute load average read just before it.
Run ``python bench/bench_population.py`` (writes ``bench/results/population.json``);
``--members`` shrinks the ensemble for a quick look.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchlib import git_info, machine_info
from escapelab.nets.activations import get_activation
from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import Objective
from escapelab.problems.population import DEFAULT_ORDER, PopulationObjective, population_kernel
from escapelab.problems.population_hessian import PAIR_FUNCTIONS
from escapelab.problems.teacher import make_teacher

D, WIDTH, TEACHER_WIDTH = 16, 9, 4


def timed(fn, *args) -> dict[str, float]:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    fn(*args)
    return {"seconds": time.perf_counter() - start, "load_average_1min": load}


def mc_agreement(act: str, w: torch.Tensor, v: torch.Tensor, n: int = 1_000_000) -> dict:
    """Kernel vs a seeded Monte Carlo estimate: largest z-score and absolute error."""
    fn, chunk = get_activation(act).fn, 200_000
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(w.shape[0], v.shape[0], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for _ in range(n // chunk):
        x = torch.randn(chunk, w.shape[1], generator=gen, dtype=torch.float64)
        prod = fn(x @ w.t()).unsqueeze(2) * fn(x @ v.t()).unsqueeze(1)
        total += prod.sum(0)
        total_sq += prod.square().sum(0)
    mean = total / n
    stderr = ((total_sq / n - mean.square()) / (n - 1)).sqrt()
    exact = population_kernel(act, w, v)
    err = (exact - mean).abs()
    return {
        "samples": n,
        "max_z_score": float((err / stderr.clamp_min(1e-300)).max()),
        "max_abs_error": float(err.max()),
        "max_stderr": float(stderr.max()),
        "max_abs_kernel": float(exact.abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--members", type=int, default=256)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "population.json"))
    args = parser.parse_args()
    results = {}
    for act in ("relu", "erf", "tanh"):
        teacher = make_teacher(D, TEACHER_WIDTH, act, "orthonormal", "ones", seed=0)
        student = Architecture(D, (WIDTH,), 1, act, bias=False, output_bias=False)
        obj = PopulationObjective(student, teacher.arch, teacher.theta)
        theta = student.init(args.members, seed=0, scheme="glorot")
        obj.hessian(theta[:2])  # warm-up
        row = {
            "n_params": student.n_params,
            "members": args.members,
            "loss": timed(obj.loss, theta),
            "loss_and_grad": timed(obj.loss_and_grad, theta),
            "hessian": timed(obj.hessian, theta),
        }
        if act in PAIR_FUNCTIONS:  # the closed form against the generic autograd Hessian
            row["hessian_autograd"] = timed(Objective.hessian, obj, theta)
            gap = (obj.hessian(theta[:8]) - Objective.hessian(obj, theta[:8])).abs().max()
            row["hessian_closed_form_vs_autograd_max_abs"] = float(gap)
        hess = obj.hessian(theta[:4])
        row["hessian_finite"] = bool(torch.isfinite(hess).all())
        if act == "tanh":
            row["quadrature_order"] = DEFAULT_ORDER
            row["quadrature_error_max_first_16"] = float(obj.quadrature_error(theta[:16]).max())
        t_w = teacher.arch.unflatten(teacher.theta)[0].weight
        s_w = student.unflatten(theta[0])[0].weight[:4]
        rows = torch.cat([s_w, t_w])
        row["kernel_vs_monte_carlo"] = mc_agreement(act, rows, rows)
        results[act] = row
        print(act, json.dumps(row), flush=True)
    out = {
        "benchmark": "population",
        "config": {"d": D, "width": WIDTH, "teacher_width": TEACHER_WIDTH, "dtype": "float64"},
        "results": results,
        "git": git_info(),
        "machine": machine_info(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
