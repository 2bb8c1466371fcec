"""Ensemble throughput of the full-batch trainer on a device: members x steps per second.

The width-sweep's problem at its defaults (erf teacher of width 4 on d = 2, students of width 8)
through the exact population loss, in float64, E students trained at once by plain Adam for
``--steps`` steps (no refinement, no stopping), for each E of ``--sizes`` and each device of
``--devices``. Members x steps per second is what one task of a width sweep gets per unit of
wall time; the GPU pays when E is large enough to fill it.

    python bench/bench_gpu_throughput.py --devices cpu cuda      # -> results/throughput.json
    python bench/bench_gpu_throughput.py --sizes 256 4096 --devices cpu --steps 50

Not measured yet on a GPU (none was available when it was written); see bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import git_info, machine_info
from escapelab import Architecture, TrainConfig, make_teacher, student_objective, train


def throughput(members: int, steps: int, device: str) -> dict[str, Any]:
    """Members x steps per second of ``steps`` Adam steps on ``members`` students (after one
    untimed step, so CUDA's start-up and kernel compilation are not counted)."""
    teacher = make_teacher(d=2, width=4, activation="erf", incoming="gaussian", seed=0)
    arch = Architecture(d_in=2, widths=(8,), activation="erf", bias=False)
    objective = student_objective(teacher, arch, n_samples=None, device=device)
    theta0 = arch.init(members, seed=0).to(device)
    config = TrainConfig(
        steps=steps,
        refine_steps=0,
        tol_grad=0.0,
        tol_global=0.0,
        max_norm=float("inf"),
        record_every=10**9,
    )
    train(objective, theta0, TrainConfig(steps=1, refine_steps=0, record_every=10**9))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    train(objective, theta0, config)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return {
        "members": members,
        "steps": steps,
        "device": device,
        "wall_s": round(wall, 3),
        "member_steps_per_s": round(members * steps / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 4096, 65536])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="throughput.json", help="file name in bench/results/")
    args = parser.parse_args()
    rows = []
    for device in args.devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(f"skipped {device}: torch sees no CUDA device")
            continue
        for members in args.sizes:
            rows.append(throughput(members, args.steps, device))
            print(json.dumps(rows[-1]))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    out = {"benchmark": "throughput", "gpu": gpu, "machine": machine_info(), **git_info()}
    path = Path(__file__).resolve().parent / "results" / args.out
    path.write_text(json.dumps({**out, "results": rows}, indent=2) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
