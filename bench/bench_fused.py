"""Benchmark: the fused C loss-and-gradient kernel against today's torch path, JAX and a loop.

Issue 15's workload (that of ``bench_ensemble.py``): 256 tanh students of width 8 on d = 16
Gaussian inputs, N = 4096 samples of a width-4 teacher, 500 full-batch Adam steps (lr 1e-2), in
float32 and float64. Four ways to train the same students from the same initial weights, timed
round-robin in one process so that the load of a shared machine hits all of them alike:

* ``fused``  -- ``escapelab.optim.full_batch.train`` on a ``DataObjective`` with the fused C kernel
  (:mod:`escapelab.problems.shallow_kernel`, ``kernel="fused"``);
* ``torch``  -- the same trainer on the torch path (``kernel="torch"``: the code before issue 15);
* ``jax``    -- JAX on the CPU: ``jit`` of ``lax.scan`` over Adam steps of ``vmap(value_and_grad)``
  (500 gradient evaluations and updates, then the final loss), if JAX is installed;
* ``loop``   -- one ``torch.nn.Sequential`` per student with ``torch.optim.Adam`` (the baseline
  of ``bench_ensemble.py``), on the first ``--loop-members`` students (default 32) and one torch
  thread (tiny ops gain nothing from a second thread, and on a shared machine OpenMP's
  spin-waiting makes them many times slower); its time is scaled to all students (students are
  independent, so the loop's cost is linear in their number).

Final losses are recomputed in float64 from every side's final weights with one formula and
compared with the loop's. Then four studies of the trainer alone:

* **E-scaling**: seconds per loss-and-gradient evaluation for E = 16 ... 1024 members, fused and
  torch side by side (interleaved, the fastest of ``--repeats`` rounds kept);
* **peak memory**: the peak resident set (``VmHWM``) of a fresh process that trains E
  members for 20 steps, minus that of the same process before building the data, for
  E = 64, 256, 1024 and both kernels;
* **slow mode**: seconds per evaluation in several fresh processes per kernel (the issue saw 15
  vs 27-30 ms per step in different processes on the torch path).
* **activations**: seconds per evaluation at E = 256 for every activation the fused kernel has,
  fused and torch path side by side (``--only-activations`` runs this study alone).

Run ``python bench/bench_fused.py`` (full; ``bench/results/fused.json``) or ``--quick``
(32 students, 50 steps; ``bench/results/fused-quick.json``); ``--output`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench_ensemble import (
    Problem,
    Workload,
    initial_theta,
    make_problem,
    max_rel,
    quantiles,
    reference_loss,
    rel_diff,
    run_loop,
    train_config,
)
from benchlib import git_info, machine_info
from escapelab.nets.mlp import Architecture
from escapelab.optim.full_batch import train
from escapelab.problems.objective import DataObjective
from escapelab.problems.shallow_kernel import ACTIVATION_CODES

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def run_trainer(problem: Problem, theta0: Tensor, steps: int, lr: float, kernel: str) -> Tensor:
    """Train all members with escapelab's trainer on the chosen kernel; final weights."""
    dtype = theta0.dtype
    obj = DataObjective(problem.arch, problem.x.to(dtype), problem.y.to(dtype), kernel=kernel)
    return train(obj, theta0, train_config(steps, lr)).theta


def jax_trainer(problem: Problem, steps: int, lr: float, dtype: str):  # type: ignore[no-untyped-def]
    """A jitted JAX function theta0 (E, P) -> final theta: Adam on vmapped value_and_grad."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    jdt = jnp.float32 if dtype == "float32" else jnp.float64
    x = jnp.asarray(problem.x.numpy(), dtype=jdt)
    y = jnp.asarray(problem.y[:, 0].numpy(), dtype=jdt)
    d, m = problem.arch.d_in, problem.arch.widths[0]
    b1, b2, eps = 0.9, 0.999, 1e-8

    def member_loss(theta):  # type: ignore[no-untyped-def]
        w = theta[: m * d].reshape(m, d)
        b = theta[m * d : m * d + m]
        a = theta[m * d + m :]
        f = jnp.tanh(x @ w.T + b) @ a
        return 0.5 * jnp.mean((f - y) ** 2)

    grad_fn = jax.vmap(jax.value_and_grad(member_loss))

    def step(state, t):  # type: ignore[no-untyped-def]
        theta, mom, vel = state
        _, g = grad_fn(theta)
        mom = b1 * mom + (1 - b1) * g
        vel = b2 * vel + (1 - b2) * g * g
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        theta = theta - (lr / bc1) * mom / (jnp.sqrt(vel) / jnp.sqrt(bc2) + eps)
        return (theta, mom, vel), None

    @jax.jit
    def run(theta0):  # type: ignore[no-untyped-def]
        zeros = jnp.zeros_like(theta0)
        ts = jnp.arange(1, steps + 1, dtype=jdt)
        (theta, _, _), _ = jax.lax.scan(step, (theta0, zeros, zeros), ts)
        return theta, jax.vmap(member_loss)(theta)

    def call(theta0: Tensor) -> Tensor:
        theta, loss = run(jnp.asarray(theta0.numpy(), dtype=jdt))
        loss.block_until_ready()
        return torch.from_numpy(jax.device_get(theta).copy())

    return call


def timed(fn, *args):  # type: ignore[no-untyped-def]
    """(result, wall seconds, process CPU seconds) of fn(*args)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def loop_one_thread(problem: Problem, theta0: Tensor, steps: int, lr: float) -> Tensor:
    """The per-network loop on one torch thread; final weights."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_loop(problem, theta0, steps, lr)[0]
    finally:
        torch.set_num_threads(threads)


def bench_training(
    problem: Problem, work: Workload, rounds: int, loop_members: int
) -> dict[str, Any]:
    """All four sides per precision, round-robin; fastest round kept; final-loss agreement
    (the loop's students only)."""
    try:
        import jax  # noqa: F401

        have_jax = True
    except ImportError:
        have_jax = False
    report: dict[str, Any] = {"jax_installed": have_jax}
    for name, dtype in DTYPES.items():
        theta0 = initial_theta(work, dtype)
        sides: dict[str, Any] = {
            "fused": lambda t: run_trainer(problem, t, work.steps, work.lr, "fused"),
            "torch": lambda t: run_trainer(problem, t, work.steps, work.lr, "torch"),
            "loop": lambda t: loop_one_thread(problem, t[:loop_members], work.steps, work.lr),
        }
        if have_jax:
            jax_fn = jax_trainer(problem, work.steps, work.lr, name)
            _, compile_s, _ = timed(jax_fn, theta0)  # compiles for this shape
            sides["jax"] = jax_fn
            report.setdefault("jax_first_call_s", {})[name] = compile_s
        small = initial_theta(Workload(**{**asdict(work), "members": 4}), dtype)
        # untimed warm-ups: the fused kernel is compiled or loaded, torch its first-call paths
        run_trainer(problem, small, 5, work.lr, "fused")
        run_trainer(problem, small, 5, work.lr, "torch")
        loop_one_thread(problem, small, 5, work.lr)
        walls: dict[str, list[float]] = {s: [] for s in sides}
        cpus: dict[str, list[float]] = {s: [] for s in sides}
        finals: dict[str, Tensor] = {}
        for r in range(rounds):
            for side, fn in sides.items():
                print(f"[train {name}] round {r + 1}: {side} ...", flush=True)
                theta, wall, cpu = timed(fn, theta0)
                if side == "loop":  # scaled to all students
                    wall, cpu = (
                        wall * work.members / loop_members,
                        cpu * work.members / loop_members,
                    )
                walls[side].append(wall)
                cpus[side].append(cpu)
                finals[side] = theta
                print(f"[train {name}]   {wall:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        ref = {
            s: reference_loss(t[:loop_members], problem.x, problem.y, work.width)
            for s, t in finals.items()
        }
        best = {s: min(w) for s, w in walls.items()}
        report[name] = {
            "loop_members_timed": loop_members,
            "wall_s": best,
            "round_walls_s": walls,
            "round_cpu_s": cpus,
            "times_loop": {s: best["loop"] / best[s] for s in best},
            "fused_over_jax": best["jax"] / best["fused"] if "jax" in best else None,
            "fused_over_torch_path": best["torch"] / best["fused"],
            "per_round_fused_over_jax": [
                j / f for j, f in zip(walls.get("jax", []), walls["fused"], strict=False)
            ],
            "per_round_fused_over_loop": [
                lo / f for lo, f in zip(walls["loop"], walls["fused"], strict=True)
            ],
            "final_loss_vs_loop": {
                s: {
                    "max_rel_diff": max_rel(ref[s], ref["loop"]),
                    "rel_diff_quantiles": quantiles(rel_diff(ref[s], ref["loop"])),
                }
                for s in ref
                if s != "loop"
            },
            "final_loss_median": {s: ref[s].median().item() for s in ref},
        }
    return report


def per_step_seconds(obj: DataObjective, theta: Tensor, evals: int) -> float:
    """Mean seconds of one loss-and-gradient evaluation over ``evals`` calls (after one), in
    the objective's ``step_loop`` context as the trainer calls it."""
    with obj.step_loop(theta):
        obj.loss_and_grad(theta)
        start = time.perf_counter()
        for _ in range(evals):
            obj.loss_and_grad(theta)
        return (time.perf_counter() - start) / evals


def fastest_per_eval(
    arch: Architecture, problem: Problem, dtype: torch.dtype, theta: Tensor, evals: int, rounds: int
) -> dict[str, float]:
    """Seconds per evaluation, fused kernel and torch path interleaved, fastest of ``rounds``."""
    objs = {
        k: DataObjective(arch, problem.x.to(dtype), problem.y.to(dtype), kernel=k)
        for k in ("fused", "torch")
    }
    best = dict.fromkeys(objs, float("inf"))
    for _ in range(rounds):
        for k, obj in objs.items():
            best[k] = min(best[k], per_step_seconds(obj, theta, evals))
    return best


def bench_scaling(problem: Problem, work: Workload, sizes: list[int], rounds: int) -> dict:
    """Seconds per evaluation and member-steps per second against E, both kernels."""
    out: dict[str, Any] = {}
    for name, dtype in DTYPES.items():
        rows = []
        for n_members in sizes:
            theta = initial_theta(Workload(**{**asdict(work), "members": n_members}), dtype)
            evals = max(3, 2048 // n_members)
            best = fastest_per_eval(problem.arch, problem, dtype, theta, evals, rounds)
            rows.append(
                {
                    "members": n_members,
                    "fused_s_per_eval": best["fused"],
                    "torch_s_per_eval": best["torch"],
                    "fused_member_evals_per_s": n_members / best["fused"],
                    "torch_member_evals_per_s": n_members / best["torch"],
                    "fused_over_torch": best["torch"] / best["fused"],
                }
            )
            print(f"[scaling {name}] E={n_members}: {rows[-1]}", flush=True)
        out[name] = rows
    return out


def bench_activations(problem: Problem, work: Workload, members: int, rounds: int) -> dict:
    """Seconds per evaluation of every activation the fused kernel has, fused and torch path
    side by side (interleaved, fastest of ``rounds``), at E = ``members``: the issue's
    workload measures tanh only, and an activation the kernel computes slowly (erf and
    softplus once called the C library per element) would not show there."""
    out: dict[str, Any] = {}
    for name, dtype in DTYPES.items():
        rows = []
        theta = initial_theta(Workload(**{**asdict(work), "members": members}), dtype)
        for activation in ACTIVATION_CODES:
            arch = Workload(**{**asdict(work), "activation": activation}).arch
            best = fastest_per_eval(arch, problem, dtype, theta, 8, rounds)
            rows.append(
                {
                    "activation": activation,
                    "fused_s_per_eval": best["fused"],
                    "torch_s_per_eval": best["torch"],
                    "fused_over_torch": best["torch"] / best["fused"],
                }
            )
            print(f"[activations {name}] {rows[-1]}", flush=True)
        out[name] = rows
    return out


CHILD = """
import sys, time, torch
sys.path.insert(0, {bench!r})
from bench_ensemble import Workload, initial_theta, make_problem, train_config
from escapelab.optim.full_batch import train
from escapelab.problems.objective import DataObjective
kernel, members, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return float(line.split()[1])
base = hwm()
work = Workload(members=members)
problem = make_problem(work)
obj = DataObjective(problem.arch, problem.x.float(), problem.y.float(), kernel=kernel)
theta = initial_theta(work, torch.float32)
if mode == "memory":
    train(obj, theta, train_config(20, work.lr))
    print(base, hwm())
else:
    obj.loss_and_grad(theta)
    times = []
    for _ in range(30):
        t = time.perf_counter(); obj.loss_and_grad(theta); times.append(time.perf_counter() - t)
    times.sort()
    print(times[len(times) // 2])
"""


def child(kernel: str, members: int, mode: str) -> list[float]:
    """Run the CHILD script in a fresh interpreter; its printed numbers."""
    code = CHILD.format(bench=str(Path(__file__).resolve().parent))
    out = subprocess.run(
        [sys.executable, "-c", code, kernel, str(members), mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return [float(v) for v in out.stdout.split()]


def bench_memory(sizes: list[int]) -> dict[str, Any]:
    """Peak RSS (MiB, VmHWM) of fresh processes training E float32 members for 20 steps."""
    rows = []
    for n_members in sizes:
        row: dict[str, Any] = {"members": n_members}
        for kernel in ("fused", "torch"):
            base, peak = child(kernel, n_members, "memory")
            row[f"{kernel}_peak_mib"] = peak / 1024
            row[f"{kernel}_after_imports_mib"] = base / 1024
            row[f"{kernel}_growth_mib"] = (peak - base) / 1024
        rows.append(row)
        print(f"[memory] {row}", flush=True)
    return {"rows": rows, "note": "VmHWM of a fresh process; growth = peak - after imports"}


def bench_slow_mode(processes: int) -> dict[str, Any]:
    """Median seconds per float32 evaluation (E = 256) in fresh processes, kernels alternating."""
    times: dict[str, list[float]] = {"fused": [], "torch": []}
    for _ in range(processes):
        for kernel in times:
            times[kernel].append(child(kernel, 256, "time")[0])
    print(f"[slow mode] {times}", flush=True)
    return {
        "per_process_median_s": times,
        "spread_max_over_min": {k: max(v) / min(v) for k, v in times.items()},
        "median_s": {k: statistics.median(v) for k, v in times.items()},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 students, 50 steps")
    parser.add_argument("--rounds", type=int, default=1, help="round-robin training rounds")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument(
        "--only-activations",
        action="store_true",
        help="only the per-activation study (seconds per evaluation, fused vs torch path)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/)")
    parser.add_argument("--processes", type=int, default=6, help="fresh processes per kernel")
    parser.add_argument("--loop-members", type=int, default=32, help="students the loop trains")
    parser.add_argument(
        "--steps", type=int, default=None, help="Adam steps (default: the issue's 500)"
    )
    parser.add_argument(
        "--sizes", default="16,64,256,1024", help="ensemble sizes of the E-scaling study"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for torch, the fused kernel and XLA (default: torch's); 1 keeps OpenMP "
        "spin-waits of an overloaded shared machine out of the numbers",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_cpu_multi_thread_eigen={'false' if args.threads == 1 else 'true'}"
            + f" intra_op_parallelism_threads={args.threads}"
        ).strip()
    work = Workload(members=32, steps=50) if args.quick else Workload()
    if args.steps is not None:
        work = Workload(**{**asdict(work), "steps": args.steps})
    problem = make_problem(work)
    load0 = os.getloadavg()
    report: dict[str, Any] = {
        "benchmark": "fused C kernel vs torch path vs JAX vs per-network loop",
        "quick": args.quick,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "machine": machine_info(),
        "workload": {**asdict(work), "n_params": work.arch.n_params},
        "load_average_at_start": load0,
        "threads": torch.get_num_threads(),
    }
    activation_members = 64 if args.quick else 256
    if args.only_activations:
        report["activations"] = bench_activations(problem, work, activation_members, rounds=3)
    else:
        if not args.skip_training:
            loop_members = min(args.loop_members, work.members)
            report["training"] = bench_training(problem, work, args.rounds, loop_members)
        sizes = [16, 64] if args.quick else [int(v) for v in args.sizes.split(",")]
        report["scaling"] = bench_scaling(problem, work, sizes, rounds=2)
        report["activations"] = bench_activations(problem, work, activation_members, rounds=3)
        report["memory"] = bench_memory([64, 256] if args.quick else [64, 256, 1024])
        report["slow_mode"] = bench_slow_mode(2 if args.quick else args.processes)
    report["load_average_at_end"] = os.getloadavg()
    report["max_rss_mib_this_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = args.output or RESULTS_DIR / ("fused-quick.json" if args.quick else "fused.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {out}")
    return report


if __name__ == "__main__":
    main()
