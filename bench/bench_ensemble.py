"""Benchmark: escapelab's fused ensemble trainer against a plain per-student PyTorch loop.

Workload (the issue's): E students of width 8 (tanh, one hidden layer, hidden biases, no output
bias) on d = 16 Gaussian inputs, N = 4096 samples labelled by a width-4 tanh teacher, trained
full-batch with Adam (lr 1e-2, default betas/eps) on L = 1/(2N) sum_n (f(x_n) - y_n)^2, in float32
and in float64.

* ``ensemble`` -- ``escapelab.optim.full_batch.train`` on a ``DataObjective``: all members at once.
* ``loop``     -- for each student, a ``torch.nn.Sequential`` with the same initial weights (row i
  of ``theta0``) trained by ``torch.optim.Adam`` with ordinary autograd.

Both follow the trainer's step accounting exactly: loss and gradient are evaluated at steps
0..S (S + 1 evaluations) and S Adam updates are applied, so the final evaluated loss is the loss
after the S-th update. Final losses are then recomputed in float64 from each side's final weights
with one independent formula, and compared.

A second part times exact Hessians for classification: ``DataObjective.hessian`` on the trained
float64 ensemble, plus ``torch.linalg.eigvalsh`` of the result, for several member chunk sizes.

Every timed block also records how much CPU the *rest* of the machine used meanwhile (from
/proc/stat), because on a small shared machine one competing job inflates the timings of a
two-thread OpenMP run many times over; ``--wait-idle`` and ``--retries`` keep such periods out.

Run ``python bench/bench_ensemble.py`` (full; writes ``bench/results/ensemble.json``) or add
``--quick`` for a smoke run (writes ``bench/results/ensemble-quick.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from benchlib import git_info, machine_busy_seconds, machine_info
from escapelab.nets.mlp import Architecture
from escapelab.optim.full_batch import TrainConfig, TrainResult, train
from escapelab.problems.objective import DataObjective, Objective
from escapelab.problems.teacher import gaussian_inputs, make_teacher

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SPEEDUP_TARGET_FLOAT32 = 10.0
HESSIAN_TARGET_S = 2.0
CLEAN_SHARE = 0.05  # other processes' share of the cores above which a timing counts as disturbed
MIN_OTHERS_CPU_S = 0.05  # below this /proc/stat's 10 ms ticks make the share meaningless
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

T = TypeVar("T")


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class Workload:
    """Sizes and hyperparameters of one benchmark run."""

    members: int = 256
    d: int = 16
    width: int = 8
    teacher_width: int = 4
    activation: str = "tanh"
    n_samples: int = 4096
    steps: int = 500
    lr: float = 1e-2
    seed: int = 0
    init: str = "glorot"

    @property
    def arch(self) -> Architecture:
        """The student architecture: one tanh hidden layer with biases, linear bias-free output."""
        return Architecture(self.d, (self.width,), 1, self.activation, bias=True, output_bias=False)


@dataclass(frozen=True)
class Problem:
    """The shared data of one run: architecture, float64 inputs and teacher labels."""

    arch: Architecture
    x: Tensor
    y: Tensor


def make_problem(work: Workload) -> Problem:
    """Teacher, inputs and labels exactly as in the issue (all float64)."""
    teacher = make_teacher(
        d=work.d,
        width=work.teacher_width,
        activation=work.activation,
        incoming="gaussian",
        outgoing="signs",
        bias=False,
        seed=work.seed,
    )
    x = gaussian_inputs(work.n_samples, work.d, seed=work.seed)
    return Problem(work.arch, x, teacher(x))


def initial_theta(work: Workload, dtype: torch.dtype) -> Tensor:
    """Initial ensemble parameters (E, P); member i depends only on (seed, i)."""
    return work.arch.init(work.members, seed=work.seed, scheme=work.init, dtype=dtype)


# --------------------------------------------------------------------------- timing


class Stopwatch:
    """Wall time, this process's CPU time and other processes' CPU time over a ``with`` block.

    ``others_cpu_share`` is the CPU time the rest of the machine used (busy time from /proc/stat
    minus this process's) as a fraction of all cores over the block: near 0 means the timing is
    clean; a few tenths means another job competed for the cores and the wall time is inflated.
    """

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.others_cpu: float | None = None
        self.attempt_walls: list[float] = []
        self.attempt_shares: list[float | None] = []
        self._busy0: float | None = None
        self._wall0 = self._cpu0 = 0.0

    def __enter__(self) -> Stopwatch:
        self._busy0 = machine_busy_seconds()
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall0
        self.cpu = time.process_time() - self._cpu0
        busy1 = machine_busy_seconds()
        if self._busy0 is not None and busy1 is not None:
            self.others_cpu = max(0.0, busy1 - self._busy0 - self.cpu)

    @property
    def others_cpu_share(self) -> float | None:
        """Other processes' CPU time over (wall time x cores), or None if unknown."""
        if self.others_cpu is None:
            return None
        return self.others_cpu / (max(self.wall, 1e-9) * (os.cpu_count() or 1))

    def disturbed(self, threshold: float) -> bool:
        """Whether others took at least ``threshold`` of the cores (and a measurable amount)."""
        share = self.others_cpu_share
        return share is not None and share >= threshold and self.others_cpu >= MIN_OTHERS_CPU_S

    def as_dict(self) -> dict[str, Any]:
        """Wall and CPU seconds, their ratio, other processes' share, attempts made."""
        return {
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "cpu_per_wall": self.cpu / max(self.wall, 1e-9),
            "others_cpu_s": self.others_cpu,
            "others_cpu_share": self.others_cpu_share,
            "disturbed": self.disturbed(CLEAN_SHARE),
            "attempt_walls_s": self.attempt_walls,
            "attempt_others_cpu_shares": self.attempt_shares,
        }


@dataclass
class CleanTimer:
    """Times blocks while keeping other processes' load out of the numbers where it can.

    Before each attempt it waits up to ``max_wait_s`` until the rest of the machine used under
    ``threshold`` of the cores over a ``sample_s`` sample; after an attempt that others disturbed
    (share above ``threshold``) it times the block again, up to ``retries`` times, and keeps the
    fastest attempt (outside load only ever adds time). Waits, give-ups and re-runs are counted.
    """

    max_wait_s: float = 0.0
    retries: int = 0
    threshold: float = CLEAN_SHARE
    sample_s: float = 2.0
    waited_s: float = 0.0
    gave_up: int = 0
    reruns: int = 0

    def wait_until_quiet(self) -> None:
        """Block until the machine is quiet or ``max_wait_s`` has passed (no-op when 0)."""
        if self.max_wait_s <= 0:
            return
        start = time.monotonic()
        while True:
            busy0 = machine_busy_seconds()
            time.sleep(self.sample_s)
            busy1 = machine_busy_seconds()
            if busy0 is None or busy1 is None:
                break
            if (busy1 - busy0) / (self.sample_s * (os.cpu_count() or 1)) < self.threshold:
                break
            if time.monotonic() - start > self.max_wait_s:
                self.gave_up += 1
                break
        self.waited_s += time.monotonic() - start

    def run(self, fn: Callable[[], T], repeats: int = 1) -> tuple[T, Stopwatch]:
        """Time ``fn`` at least ``repeats`` times, more if disturbed; keep the fastest attempt.

        ``fn`` must be deterministic: the result of the kept attempt is returned.
        """
        best: tuple[T, Stopwatch] | None = None
        walls: list[float] = []
        shares: list[float | None] = []
        retried = 0
        while True:
            self.wait_until_quiet()
            with Stopwatch() as watch:
                result = fn()
            walls.append(watch.wall)
            shares.append(watch.others_cpu_share)
            attempts = len(walls)
            if best is None or watch.wall < best[1].wall:
                best = (result, watch)
            if attempts < repeats:
                continue
            if not best[1].disturbed(self.threshold) or retried >= self.retries:
                break
            retried += 1
            self.reruns += 1
            print(
                f"    (others used {best[1].others_cpu_share:.0%} of the cores over "
                f"{best[1].wall:.1f} s; timing again)",
                flush=True,
            )
        best[1].attempt_walls, best[1].attempt_shares = walls, shares
        return best


# --------------------------------------------------------------------------- ensemble side


def train_config(steps: int, lr: float) -> TrainConfig:
    """Plain Adam for exactly ``steps`` updates: no refinement, no early stopping."""
    return TrainConfig(
        optimizer="adam",
        lr=lr,
        steps=steps,
        refine_steps=0,
        tol_grad=0.0,
        tol_global=0.0,
        max_norm=float("inf"),
        record_every=10**9,
    )


def run_ensemble(problem: Problem, theta0: Tensor, steps: int, lr: float) -> TrainResult:
    """Train all members at once with escapelab's trainer."""
    dtype = theta0.dtype
    obj = DataObjective(problem.arch, problem.x.to(dtype), problem.y.to(dtype))
    return train(obj, theta0, train_config(steps, lr))


# --------------------------------------------------------------------------- loop side


def build_student(arch: Architecture, theta0: Tensor, i: int) -> nn.Sequential:
    """A ``torch.nn`` network whose weights are copied from row ``i`` of ``theta0``."""
    (fan_in, fan_out, _), (_, d_out, _) = arch.layer_dims
    first, out = arch.unflatten(theta0)
    assert first.bias is not None and out.bias is None
    model = nn.Sequential(
        nn.Linear(fan_in, fan_out, dtype=theta0.dtype),
        nn.Tanh(),
        nn.Linear(fan_out, d_out, bias=False, dtype=theta0.dtype),
    )
    with torch.no_grad():
        model[0].weight.copy_(first.weight[i])
        model[0].bias.copy_(first.bias[i])
        model[2].weight.copy_(out.weight[i])
    return model


def flat_params(model: nn.Sequential) -> Tensor:
    """A student's parameters in escapelab's flat layout: W1, b1, W2 (row-major)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def half_mse(out: Tensor, y: Tensor) -> Tensor:
    """0.5 * mean squared error: 1/(2N) sum_n (f(x_n) - y_n)^2 for d_out = 1."""
    return 0.5 * nn.functional.mse_loss(out, y)


def train_student(model: nn.Sequential, x: Tensor, y: Tensor, steps: int, lr: float) -> float:
    """Adam on one student, with the trainer's accounting; return the final evaluated loss.

    Loss and gradient are evaluated at steps 0..steps and ``steps`` updates are applied, the
    same work per student as ``escapelab.optim.full_batch.train``.
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps + 1):
        opt.zero_grad()
        loss = half_mse(model(x), y)
        loss.backward()
        if step == steps:
            break
        opt.step()
    return loss.item()


def run_loop(problem: Problem, theta0: Tensor, steps: int, lr: float) -> tuple[Tensor, Tensor]:
    """Train every student one after another; return final weights (E, P) and losses (E,)."""
    dtype = theta0.dtype
    x, y = problem.x.to(dtype), problem.y.to(dtype)
    thetas, losses = [], []
    for i in range(theta0.shape[0]):
        model = build_student(problem.arch, theta0, i)
        losses.append(train_student(model, x, y, steps, lr))
        thetas.append(flat_params(model))
    return torch.stack(thetas), torch.tensor(losses, dtype=torch.float64)


def check_same_start(arch: Architecture, theta0: Tensor) -> None:
    """Fail loudly unless every loop student starts exactly at its row of ``theta0``."""
    for i in range(theta0.shape[0]):
        if not torch.equal(flat_params(build_student(arch, theta0, i)), theta0[i]):
            raise AssertionError(f"loop student {i} does not start at theta0[{i}]")


# --------------------------------------------------------------------------- comparison


def reference_loss(theta: Tensor, x: Tensor, y: Tensor, width: int) -> Tensor:
    """Per-member half MSE (E,) in float64, written independently of escapelab's forward pass."""
    theta, x, y = theta.double(), x.double(), y.double()
    d = x.shape[1]
    w1 = theta[:, : width * d].reshape(-1, width, d)
    b1 = theta[:, width * d : width * d + width]
    a = theta[:, width * d + width :]
    h = torch.tanh(torch.einsum("nd,emd->enm", x, w1) + b1.unsqueeze(1))
    f = torch.einsum("enm,em->en", h, a)
    return 0.5 * (f - y[:, 0]).square().mean(dim=1)


def rel_diff(a: Tensor, b: Tensor) -> Tensor:
    """|a_i - b_i| / |b_i| per member (denominator floored at the smallest positive float64)."""
    a, b = a.double(), b.double()
    return (a - b).abs() / b.abs().clamp_min(torch.finfo(torch.float64).tiny)


def max_rel(a: Tensor, b: Tensor) -> float:
    """max_i |a_i - b_i| / |b_i|."""
    return rel_diff(a, b).max().item()


def quantiles(values: Tensor, qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, float]:
    """Selected quantiles of a 1-d tensor, keyed "q50", "q90", ..."""
    out = torch.quantile(values.double(), torch.tensor(qs, dtype=torch.float64))
    return {f"q{round(100 * q)}": v for q, v in zip(qs, out.tolist(), strict=True)}


def warm_up(problem: Problem, work: Workload, dtype: torch.dtype) -> None:
    """A few untimed steps of both sides so that one-off start-up costs are not timed."""
    theta0 = initial_theta(Workload(**{**asdict(work), "members": 4}), dtype)
    run_ensemble(problem, theta0, 5, work.lr)
    run_loop(problem, theta0, 5, work.lr)


def bench_dtype(
    problem: Problem, work: Workload, name: str, timer: CleanTimer, repeats: int = 1
) -> tuple[dict[str, Any], Tensor]:
    """Time both sides in one precision and compare their endpoints.

    The two sides alternate for ``repeats`` rounds (ensemble, loop, ensemble, loop, ...) so that
    slow spells of a shared machine hit both alike; each side's fastest round is kept. Returns
    the statistics and the ensemble's final parameters.
    """
    dtype = DTYPES[name]
    theta0 = initial_theta(work, dtype)
    check_same_start(problem.arch, theta0)
    warm_up(problem, work, dtype)
    ens_rounds: list[tuple[TrainResult, Stopwatch]] = []
    loop_rounds: list[tuple[tuple[Tensor, Tensor], Stopwatch]] = []
    for r in range(repeats):
        tag = f"[{name}] round {r + 1}/{repeats}:"
        print(f"{tag} ensemble, {work.members} members x {work.steps} steps ...", flush=True)
        ens_rounds.append(timer.run(lambda: run_ensemble(problem, theta0, work.steps, work.lr)))
        print(f"{tag}   {ens_rounds[-1][1].wall:.2f} s; loop ...", flush=True)
        loop_rounds.append(timer.run(lambda: run_loop(problem, theta0, work.steps, work.lr)))
        print(f"{tag}   {loop_rounds[-1][1].wall:.2f} s", flush=True)
    res, w_ens = min(ens_rounds, key=lambda rw: rw[1].wall)
    (theta_loop, loss_loop_own), w_loop = min(loop_rounds, key=lambda rw: rw[1].wall)

    ref_ens = reference_loss(res.theta, problem.x, problem.y, work.width)
    ref_loop = reference_loss(theta_loop, problem.x, problem.y, work.width)
    weight_diff = (res.theta.double() - theta_loop.double()).abs().amax(dim=1)  # per member
    student_steps = work.members * work.steps
    stats = {
        "ensemble_wall_s": w_ens.wall,
        "loop_wall_s": w_loop.wall,
        "speedup": w_loop.wall / w_ens.wall,
        "ensemble_student_steps_per_s": student_steps / w_ens.wall,
        "loop_student_steps_per_s": student_steps / w_loop.wall,
        "ensemble_timing": w_ens.as_dict(),
        "loop_timing": w_loop.as_dict(),
        "ensemble_round_walls_s": [w.wall for _, w in ens_rounds],
        "loop_round_walls_s": [w.wall for _, w in loop_rounds],
        "speedup_per_round": [
            wl.wall / we.wall for (_, we), (_, wl) in zip(ens_rounds, loop_rounds, strict=True)
        ],
        "ensemble_trainer_reported_wall_s": res.wall_time,
        "ensemble_statuses": {s: res.status.count(s) for s in sorted(set(res.status))},
        "final_loss_agreement": {
            "max_abs_diff": (ref_ens - ref_loop).abs().max().item(),
            "max_rel_diff": max_rel(ref_ens, ref_loop),
            "rel_diff_quantiles": quantiles(rel_diff(ref_ens, ref_loop)),
            "note": "float64 half MSE recomputed from each side's final weights, one formula",
        },
        "final_weights_max_abs_diff": weight_diff.max().item(),
        "final_weights_abs_diff_quantiles": quantiles(weight_diff),
        "self_reported_vs_recomputed": {
            "ensemble_max_rel_diff": max_rel(res.loss.double(), ref_ens),
            "loop_max_rel_diff": max_rel(loss_loop_own, ref_loop),
        },
        "final_loss_float64": {
            "ensemble_min": ref_ens.min().item(),
            "ensemble_median": ref_ens.median().item(),
            "ensemble_max": ref_ens.max().item(),
            "loop_min": ref_loop.min().item(),
            "loop_median": ref_loop.median().item(),
            "loop_max": ref_loop.max().item(),
        },
    }
    return stats, res.theta


# --------------------------------------------------------------------------- Hessians


def member_hessian_reference(theta: Tensor, x: Tensor, y: Tensor, width: int) -> Tensor:
    """Hessian (P, P) of one member's loss with ``torch.autograd.functional`` (a cross-check)."""

    def loss(t: Tensor) -> Tensor:
        return reference_loss(t.unsqueeze(0), x, y, width)[0]

    return torch.autograd.functional.hessian(loss, theta.double())


def bench_hessian(
    problem: Problem,
    work: Workload,
    theta: Tensor,
    chunks: list[int | None],
    generic_members: int,
    timer: CleanTimer,
    repeats: int = 3,
) -> dict[str, Any]:
    """Time ``DataObjective.hessian`` + ``eigvalsh`` on ``theta`` (E, P) for each member chunk.

    Each is timed ``repeats`` times and the fastest kept. Also times the generic
    ``Objective.hessian`` (``torch.func`` forward-over-reverse, what architectures without a
    closed form get) on the first ``generic_members`` members, compares the two, and checks a
    few members against ``torch.autograd.functional``.
    """
    theta = theta.double()
    n_members = theta.shape[0]
    obj = DataObjective(problem.arch, problem.x, problem.y)
    obj.hessian(theta[:2])  # untimed warm-ups of first calls (kernels, LAPACK)
    torch.linalg.eigvalsh(torch.eye(theta.shape[1], dtype=theta.dtype).expand(2, -1, -1))
    runs, first = [], None
    for chunk in chunks:
        label = "default" if chunk is None else str(chunk)
        print(f"[hessian] {n_members} members, member_chunk={label} ...", flush=True)
        hess, w_hess = timer.run(
            lambda chunk=chunk: obj.hessian(theta, member_chunk=chunk), repeats=repeats
        )
        eig, w_eig = timer.run(lambda hess=hess: torch.linalg.eigvalsh(hess), repeats=repeats)
        print(f"[hessian]   hessian {w_hess.wall:.3f} s, eigvalsh {w_eig.wall:.3f} s", flush=True)
        run: dict[str, Any] = {
            "member_chunk": label,
            "hessian_s": w_hess.wall,
            "eigvalsh_s": w_eig.wall,
            "total_s": w_hess.wall + w_eig.wall,
            "hessian_s_per_member": w_hess.wall / n_members,
            "hessian_timing": w_hess.as_dict(),
            "eigvalsh_timing": w_eig.as_dict(),
            "all_finite": bool(torch.isfinite(hess).all()),
        }
        if first is None:
            first = hess
            checked = sorted({0, n_members // 2, n_members - 1})
            run["max_abs_diff_vs_autograd"] = {
                str(i): (
                    hess[i] - member_hessian_reference(theta[i], problem.x, problem.y, work.width)
                )
                .abs()
                .max()
                .item()
                for i in checked
            }
            run["min_eigenvalue_range"] = [eig[:, 0].min().item(), eig[:, 0].max().item()]
        else:
            run["max_abs_diff_vs_first_chunking"] = (hess - first).abs().max().item()
        runs.append(run)
        del hess, eig
    default = next((r for r in runs if r["member_chunk"] == "default"), None)
    basis = default or min(runs, key=lambda r: r["total_s"])
    report: dict[str, Any] = {
        "members": n_members,
        "n_params": theta.shape[1],
        "dtype": "float64",
        "theta": "final weights of the float64 ensemble run",
        "method": "DataObjective.hessian as of the measured commit",
        "runs": runs,
        "target_s": HESSIAN_TARGET_S,
        "target_basis": f"member_chunk={basis['member_chunk']}",
        "target_total_s": basis["total_s"],
        "target_met": basis["total_s"] < HESSIAN_TARGET_S,
    }
    if generic_members > 0 and first is not None:
        k = min(generic_members, n_members)
        print(f"[hessian] generic torch.func path on {k} members ...", flush=True)
        sub = theta[:k]
        Objective.hessian(obj, sub[:1])  # warm-up
        hess_g, w_gen = timer.run(lambda: Objective.hessian(obj, sub))
        print(f"[hessian]   {w_gen.wall:.2f} s", flush=True)
        report["generic_torch_func"] = {
            "members_timed": k,
            "member_chunk": obj.default_hessian_chunk(sub),
            "hessian_s": w_gen.wall,
            "hessian_s_per_member": w_gen.wall / k,
            "extrapolated_s_for_all_members": w_gen.wall / k * n_members,
            "timing": w_gen.as_dict(),
            "max_abs_diff_vs_closed_form": (hess_g - first[:k]).abs().max().item(),
        }
    return report


# --------------------------------------------------------------------------- report


def contention_report(report: dict[str, Any], timer: CleanTimer) -> dict[str, Any]:
    """How much other processes used the cores during the kept timings (0 = clean)."""
    watches = [
        s[key] for s in report["training"].values() for key in ("ensemble_timing", "loop_timing")
    ]
    for run in report.get("hessian", {}).get("runs", []):
        watches += [run["hessian_timing"], run["eigvalsh_timing"]]
    if "generic_torch_func" in report.get("hessian", {}):
        watches.append(report["hessian"]["generic_torch_func"]["timing"])
    shares = [w["others_cpu_share"] for w in watches if w["others_cpu_share"] is not None]
    disturbed = sum(w["disturbed"] for w in watches)
    return {
        "max_others_cpu_share": max(shares) if shares else None,
        "disturbed_blocks": disturbed,
        "timed_blocks": len(watches),
        "clean": None if not shares else disturbed == 0,
        "clean_rule": f"others' share < {CLEAN_SHARE} or others' CPU < {MIN_OTHERS_CPU_S} s",
        "idle_wait_s": timer.waited_s,
        "idle_wait_gave_up": timer.gave_up,
        "reruns": timer.reruns,
    }


def parse_chunks(text: str) -> list[int | None]:
    """``"default,16"`` -> [None, 16]."""
    chunks: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part:
            chunks.append(None if part == "default" else int(part))
    return chunks


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 32 students, 50 steps, own output file"
    )
    parser.add_argument(
        "--hessian-chunks",
        default="default,1,4,16,64,256",
        help="comma-separated member_chunk values for obj.hessian ('default' = its own choice)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each timed block, wait up to SECONDS for other processes to go quiet",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="time a block again (up to this many times) when other processes disturbed it",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of (ensemble, loop) training; the fastest of each is kept (Hessians: 3)",
    )
    parser.add_argument(
        "--generic-members",
        type=int,
        default=32,
        help="members on which to time the generic torch.func Hessian (0 skips it)",
    )
    parser.add_argument("--skip-hessian", action="store_true", help="time training only")
    parser.add_argument("--output", type=Path, default=None, help="override the JSON path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, write the JSON, print a summary; return the report."""
    args = parse_args(argv)
    work = Workload(members=32, steps=50) if args.quick else Workload()
    output = args.output or RESULTS_DIR / ("ensemble-quick.json" if args.quick else "ensemble.json")
    problem = make_problem(work)
    timer = CleanTimer(max_wait_s=args.wait_idle, retries=args.retries)
    repo = git_info()
    report: dict[str, Any] = {
        "benchmark": "ensemble trainer vs per-student torch loop",
        "quick": args.quick,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": repo["commit"],
        "git": repo,
        "machine": machine_info(),
        "workload": {**asdict(work), "n_params": work.arch.n_params, "optimizer": "adam"},
        "step_accounting": "loss+grad at steps 0..S (S+1 evaluations), S Adam updates",
        "timing_policy": {
            "warm_up": "5 untimed steps of both sides on 4 members before each precision",
            "training_rounds": args.repeats,
            "training_order": "ensemble and loop alternate round by round",
            "hessian_repeats": 3,
            "kept": "fastest attempt",
            "retries_if_disturbed": args.retries,
            "wait_idle_s": args.wait_idle,
        },
        "training": {},
    }
    theta64 = None
    for name in DTYPES:
        report["training"][name], theta_ens = bench_dtype(problem, work, name, timer, args.repeats)
        if name == "float64":
            theta64 = theta_ens
    speedup32 = report["training"]["float32"]["speedup"]
    report["speedup_target"] = {
        "dtype": "float32",
        "target": SPEEDUP_TARGET_FLOAT32,
        "measured": speedup32,
        "met": speedup32 >= SPEEDUP_TARGET_FLOAT32,
    }
    if not args.skip_hessian and theta64 is not None:
        chunks = parse_chunks(args.hessian_chunks)
        report["hessian"] = bench_hessian(
            problem, work, theta64, chunks, args.generic_members, timer
        )
    report["contention"] = contention_report(report, timer)

    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report, output)
    return report


def print_summary(report: dict[str, Any], output: Path) -> None:
    """A few lines for humans; the JSON has everything."""
    work, mach = report["workload"], report["machine"]
    print(
        f"\n{work['members']} students x {work['steps']} Adam steps, N={work['n_samples']}, "
        f"d={work['d']}, width={work['width']} | {mach['cpu_model']}, "
        f"{mach['torch_num_threads']} threads, torch {mach['torch_version']}"
    )
    for name, s in report["training"].items():
        agree = s["final_loss_agreement"]
        print(
            f"  {name}: ensemble {s['ensemble_wall_s']:7.2f} s  loop {s['loop_wall_s']:7.2f} s  "
            f"speedup {s['speedup']:5.2f}x  ({s['ensemble_student_steps_per_s']:,.0f} vs "
            f"{s['loop_student_steps_per_s']:,.0f} student-steps/s)"
        )
        print(
            f"           final-loss diff max abs {agree['max_abs_diff']:.2e}, "
            f"max rel {agree['max_rel_diff']:.2e}, median rel "
            f"{agree['rel_diff_quantiles']['q50']:.2e}"
        )
    tgt = report["speedup_target"]
    print(f"  float32 target >= {tgt['target']:.0f}x: {'met' if tgt['met'] else 'NOT met'}")
    if "hessian" in report:
        hs = report["hessian"]
        for run in hs["runs"]:
            print(
                f"  hessian ({hs['members']} x {hs['n_params']}^2, member_chunk="
                f"{run['member_chunk']}): {run['hessian_s']:.2f} s + eigvalsh "
                f"{run['eigvalsh_s']:.3f} s"
            )
        if "generic_torch_func" in hs:
            gen = hs["generic_torch_func"]
            print(
                f"  generic torch.func Hessian: {gen['hessian_s_per_member']:.3f} s/member "
                f"({gen['members_timed']} timed; ~{gen['extrapolated_s_for_all_members']:.0f} s "
                f"for {hs['members']})"
            )
        met = "met" if hs["target_met"] else "NOT met"
        print(f"  hessian target < {hs['target_s']:.0f} s ({hs['target_basis']}): {met}")
    cont = report["contention"]
    if cont["clean"] is False:
        print(
            f"  WARNING: other processes disturbed {cont['disturbed_blocks']} of "
            f"{cont['timed_blocks']} kept timings (up to {cont['max_others_cpu_share']:.0%} of "
            "the cores); those numbers are inflated (see 'disturbed' in the JSON)"
        )
    print(f"  -> {output}")


if __name__ == "__main__":
    main()
