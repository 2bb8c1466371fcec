"""Benchmark: escapelab.landscape.curvature on a ~100k-parameter MLP, and exact ensemble Hessians.

Part 1 (``lanczos``): the top-5 Hessian eigenpairs, by ``lanczos_eigs`` with its defaults
(machine-precision ARPACK tolerance in float64), of the cross-entropy loss of a tanh MLP
100 -> 300 -> 300 -> 10 (P = 123,610, PyTorch's default initialisation, seed 0) on 1,000 Gaussian
inputs labelled by the argmax of a random linear map. Records wall time, HVP count, eigenvalues
and residuals ||H v - lambda v||; also the time of one HVP over the full batch and over four
micro-batches of 250, and how far apart the two are.

Part 2 (``ensemble_hessian``): exact Hessians of 256 one-hidden-layer members (16 -> 8 tanh -> 1,
hidden biases, P = 144) on 4,096 samples with escapelab's closed form ``DataObjective.hessian``,
then ``torch.linalg.eigvalsh``, timed separately after one warm-up of each. Member 0 is
cross-checked against ``curvature.exact_hessian`` of an equivalent ``torch.nn`` model, whose own
time is recorded as the generic per-model cost.

Part 3 (``vs_pyhessian``, issue 15): the same MLP and data against PyHessian (Yao et al. 2020,
``pip install pyhessian``; its single-batch mode keeps the gradient's graph, as escapelab's
``reuse_graph`` now does). Top-5 eigenvalues: PyHessian's power iteration with deflation at its
default tolerance 1e-3 and at 1e-6, against ``lanczos_eigs`` at tol = 1e-3, 1e-6, 1e-10 and 0
(machine precision; the reference values), and tol = 0 without the kept graph (the code before
issue 15). Trace: PyHessian's Hutchinson (default tol 1e-3, up to 100 probes) against
``hutchinson_trace`` with the stopping rule (rel_tol 1e-2, at least 10 probes) and a 400-probe
reference. PyHessian draws float32 vectors unless torch's default dtype is float64, so it is
set to float64 around PyHessian's calls. If PyHessian is not installed the part says so.

The CPU may be shared, so every timing carries the 1-minute load average read just before it.
Run ``OPENBLAS_NUM_THREADS=1 python bench/bench_curvature.py`` (writes
``bench/results/curvature.json``): ARPACK runs on scipy's own OpenBLAS, whose threads otherwise
spin against torch's on a small machine (measured on 2 cores: ARPACK's share of a top-5 run went
from 17% to under 1%, and the run was 25% faster).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from benchlib import git, machine_info
from escapelab.landscape.curvature import (
    exact_hessian,
    hutchinson_trace,
    hvp_operator,
    lanczos_eigs,
)
from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import DataObjective

RESULTS = Path(__file__).resolve().parent / "results" / "curvature.json"
T = TypeVar("T")


def load_1min() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def timed(fn: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """Run ``fn`` once; return its result and {wall_s, cpu_s, load_1min_before}."""
    load = load_1min()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return result, {"wall_s": wall, "cpu_s": cpu, "load_1min_before": load}


# --------------------------------------------------------------------------- part 1


def lanczos_problem(seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """The 100 -> 300 -> 300 -> 10 tanh MLP and 1,000 labelled Gaussian inputs (float64)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(100, 300), nn.Tanh(), nn.Linear(300, 300), nn.Tanh(), nn.Linear(300, 10)
    ).to(torch.float64)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(1000, 100, generator=gen, dtype=torch.float64)
    y = (x @ torch.randn(100, 10, generator=gen, dtype=torch.float64)).argmax(dim=1)
    return model, x, y


def bench_lanczos() -> dict[str, Any]:
    model, x, y = lanczos_problem()
    loss_fn = nn.CrossEntropyLoss()
    micro = [(x[i : i + 250], y[i : i + 250]) for i in range(0, 1000, 250)]
    full_op = hvp_operator(model, loss_fn, (x, y))
    micro_op = hvp_operator(model, loss_fn, micro)
    v = torch.randn(
        full_op.n_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    full_op.matvec(v)  # warm-up
    hv_full, t_full = timed(lambda: full_op.matvec(v))
    hv_micro, t_micro = timed(lambda: micro_op.matvec(v))
    rel = float((hv_micro - hv_full).norm() / hv_full.norm())
    print(
        f"[lanczos] P={full_op.n_params}: one HVP {t_full['wall_s']:.3f} s full batch, "
        f"{t_micro['wall_s']:.3f} s in 4 micro-batches (rel. diff {rel:.1e})",
        flush=True,
    )

    res, t_lanczos = timed(lambda: lanczos_eigs(model, loss_fn, (x, y), k=5, which="top", seed=0))
    print(
        f"[lanczos] top-5 in {t_lanczos['wall_s']:.1f} s, {res.n_matvecs} HVPs, "
        f"max residual {float(res.residuals.max()):.1e}",
        flush=True,
    )
    return {
        "model": "tanh MLP 100-300-300-10, torch default init (seed 0), float64",
        "loss": "cross-entropy",
        "n_samples": 1000,
        "n_params": full_op.n_params,
        "k": 5,
        "which": "top",
        "tol": "default (0 = machine precision for float64)",
        "hvp_full_batch": t_full,
        "hvp_4_micro_batches": t_micro,
        "hvp_micro_vs_full_rel_diff": rel,
        "lanczos": t_lanczos,
        "n_matvecs": res.n_matvecs,
        "n_matvecs_note": "ARPACK's HVPs plus one residual check per pair",
        "seconds_per_hvp_in_lanczos": t_lanczos["wall_s"] / res.n_matvecs,
        "eigenvalues": res.eigenvalues.tolist(),
        "residuals": res.residuals.tolist(),
        "converged": res.converged.tolist(),
    }


# --------------------------------------------------------------------------- part 2


def ensemble_module(arch: Architecture, theta: Tensor) -> nn.Sequential:
    """A torch.nn copy of one member (flat layout W1, b1, W2, as ``Architecture`` flattens)."""
    (d_in, width, _), (_, d_out, _) = arch.layer_dims
    model = nn.Sequential(
        nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, d_out, bias=False)
    ).to(theta.dtype)
    torch.nn.utils.vector_to_parameters(theta, model.parameters())
    return model


def bench_ensemble_hessian() -> dict[str, Any]:
    arch = Architecture(16, (8,), 1, "tanh", bias=True, output_bias=False)
    theta = arch.init(256, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 16, generator=gen, dtype=torch.float64)
    y = torch.randn(4096, 1, generator=gen, dtype=torch.float64)
    obj = DataObjective(arch, x, y)
    torch.linalg.eigvalsh(obj.hessian(theta))  # warm-up
    hess, t_hess = timed(lambda: obj.hessian(theta))
    eig, t_eig = timed(lambda: torch.linalg.eigvalsh(hess))
    print(
        f"[ensemble] {tuple(hess.shape)}: hessian {t_hess['wall_s']:.3f} s, "
        f"eigvalsh {t_eig['wall_s']:.3f} s",
        flush=True,
    )

    def half_mse(out: Tensor, target: Tensor) -> Tensor:
        return 0.5 * nn.functional.mse_loss(out, target)

    member0 = ensemble_module(arch, theta[0])
    generic, t_generic = timed(lambda: exact_hessian(member0, half_mse, (x, y)))
    diff = float((generic - hess[0]).abs().max())
    print(
        f"[ensemble] member 0 by curvature.exact_hessian: {t_generic['wall_s']:.3f} s, "
        f"max |diff| {diff:.1e}",
        flush=True,
    )
    return {
        "members": theta.shape[0],
        "n_params": arch.n_params,
        "n_samples": x.shape[0],
        "dtype": "float64",
        "hessian": t_hess,
        "eigvalsh": t_eig,
        "total_s": t_hess["wall_s"] + t_eig["wall_s"],
        "min_eigenvalue_range": [float(eig[:, 0].min()), float(eig[:, 0].max())],
        "member0_curvature_exact_hessian": t_generic,
        "member0_max_abs_diff_vs_closed_form": diff,
    }


# --------------------------------------------------------------------------- part 3


def max_rel_error(values: list[float], reference: list[float]) -> float:
    """max_i |values_i - reference_i| / |reference_i| (both sorted descending)."""
    vals, ref = sorted(values, reverse=True), sorted(reference, reverse=True)
    return max(abs(v - r) / abs(r) for v, r in zip(vals, ref, strict=True))


def pyhessian_runs(model: nn.Module, x: Tensor, y: Tensor, loss_fn: nn.Module) -> dict:
    """PyHessian's top-5 (tol 1e-3 and 1e-6) and trace (default), timed; or why not."""
    try:
        from pyhessian import hessian as PyHessian
    except ImportError as err:  # pragma: no cover - depends on the machine
        return {"installed": False, "error": str(err)}
    out: dict[str, Any] = {"installed": True}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for tol in (1e-3, 1e-6):
            torch.manual_seed(0)
            copy = copy_model(model)
            (values, _), timing = timed(
                lambda copy=copy, tol=tol: PyHessian(
                    copy, loss_fn, data=(x, y), cuda=False
                ).eigenvalues(maxIter=100, tol=tol, top_n=5)
            )
            out[f"top5_tol_{tol:g}"] = {"eigenvalues": values, **timing}
            print(f"[pyhessian] top-5 tol {tol:g}: {timing['wall_s']:.1f} s", flush=True)
        torch.manual_seed(0)
        copy = copy_model(model)
        traces, timing = timed(
            lambda: PyHessian(copy, loss_fn, data=(x, y), cuda=False).trace(maxIter=100, tol=1e-3)
        )
        out["trace_default"] = {
            "estimate": float(sum(traces) / len(traces)),
            "n_probes": len(traces),
            **timing,
        }
        print(f"[pyhessian] trace: {len(traces)} probes, {timing['wall_s']:.1f} s", flush=True)
    finally:
        torch.set_default_dtype(previous)
    return out


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy (PyHessian leaves .grad graphs on the model it is given)."""
    import copy

    return copy.deepcopy(model)


def bench_vs_pyhessian() -> dict[str, Any]:
    model, x, y = lanczos_problem()
    loss_fn = nn.CrossEntropyLoss()
    data = (x, y)
    ours: dict[str, Any] = {}
    for label, tol, reuse in (
        ("tol_0_no_kept_graph", 0.0, False),
        ("tol_0", 0.0, True),
        ("tol_1e-10", 1e-10, True),
        ("tol_1e-6", 1e-6, True),
        ("tol_1e-3", 1e-3, True),
    ):
        res, timing = timed(
            lambda tol=tol, reuse=reuse: lanczos_eigs(
                model, loss_fn, data, k=5, tol=tol, seed=0, reuse_graph=reuse
            )
        )
        ours[label] = {
            "eigenvalues": res.eigenvalues.tolist(),
            "max_residual": float(res.residuals.max()),
            "n_matvecs": res.n_matvecs,
            **timing,
        }
        print(
            f"[escapelab] top-5 {label}: {timing['wall_s']:.1f} s, {res.n_matvecs} HVPs", flush=True
        )
    reference = ours["tol_0"]["eigenvalues"]
    for run in ours.values():
        run["max_rel_error_vs_tol_0"] = max_rel_error(run["eigenvalues"], reference)
    theirs = pyhessian_runs(model, x, y, loss_fn)
    for key, run in theirs.items():
        if key.startswith("top5"):
            run["max_rel_error_vs_tol_0"] = max_rel_error(run["eigenvalues"], reference)
    ref_trace, t_ref = timed(lambda: hutchinson_trace(model, loss_fn, data, n_probes=400, seed=1))
    rule, t_rule = timed(
        lambda: hutchinson_trace(model, loss_fn, data, n_probes=400, rel_tol=1e-2, seed=2)
    )
    print(f"[escapelab] trace: rule {rule.n_probes} probes {t_rule['wall_s']:.1f} s", flush=True)
    return {
        "model": "the part-1 MLP (P = 123,610), cross-entropy, 1,000 samples, float64",
        "escapelab_top5": ours,
        "pyhessian": theirs,
        "trace": {
            "reference_400_probes": {
                "estimate": ref_trace.trace,
                "stderr": ref_trace.stderr,
                **t_ref,
            },
            "escapelab_rel_tol_1e-2": {
                "estimate": rule.trace,
                "stderr": rule.stderr,
                "n_probes": rule.n_probes,
                "converged": rule.converged,
                **t_rule,
            },
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument(
        "--parts",
        default="lanczos,ensemble_hessian,vs_pyhessian",
        help="comma-separated parts to run (lanczos, ensemble_hessian, vs_pyhessian)",
    )
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    runners = {
        "lanczos": bench_lanczos,
        "ensemble_hessian": bench_ensemble_hessian,
        "vs_pyhessian": bench_vs_pyhessian,
    }
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "benchmark": "curvature: Lanczos top-5 of a 123k-parameter MLP; 256 exact Hessians",
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_worktree_dirty": bool(git("status", "--porcelain")),
        "machine": machine_info(),
    }
    for name, runner in runners.items():
        if name in parts:
            report[name] = runner()
    report["machine"]["load_1min_at_end"] = load_1min()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"-> {args.output}")
    return report


if __name__ == "__main__":
    main()
