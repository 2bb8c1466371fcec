"""The GPU path against the CPU: the same tasks on ``cuda`` and on ``cpu`` give the same records
to stated tolerances. Marked ``gpu``; skipped where torch sees no CUDA device.

Tolerances, and why:

* teacher-student (full-batch trainer, certification, exact-Hessian classification), float64:
  every endpoint's class is the same, losses agree to 1e-9 absolute + 1e-6 relative, parameter
  norms and extreme eigenvalues to 1e-6 relative (+ 1e-8 absolute) -- reductions run in a
  different order on the GPU, so trajectories differ by rounding, amplified a little by the
  training dynamics;
* IMP on digits (mini-batch trainer, masks), float32: the densities of every level are equal
  (pruning keeps a count, whatever ties), losses agree to 1e-3 relative and accuracies to 2
  percentage points (a magnitude tie broken the other way changes a few weights);
* curvature on an ``nn.Module``, float64: exact Hessians agree to 1e-10 relative, the top
  Lanczos eigenvalues to 1e-8 relative.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from escapelab.config import build
from escapelab.experiments import get_experiment
from escapelab.experiments.base import Task
from escapelab.landscape.curvature import exact_hessian, lanczos_eigs

# the device compared with the CPU (the tests' logic can be exercised on a machine without a GPU
# by setting this to "cpu": then every comparison is exact)
GPU = "cuda"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SWEEP = {
    "teachers": 1,
    "teacher": {"width": 3},
    "student": {"widths": [3, 5], "seeds": 8},
    "train": {"steps": 800, "refine_steps": 20, "certify_rounds": 1},
}
LOTTERY = {
    "data": {"datasets": ["digits"]},
    "net": {"hidden": [32]},
    "fit": {"steps": 100, "eval_every": 20, "batch_size": 64},
    "imp": {"levels": 3},
    "seeds": 2,
}


def _both(name: str, spec_data: dict[str, Any]) -> list[tuple[dict, dict]]:
    """Every record of every task of ``name``, run on the CPU and on the GPU, in pairs."""
    exp = get_experiment(name)
    spec = build(exp.spec_type, spec_data)
    pairs = []
    for task in exp.tasks(spec):
        plain = Task(task.key, task.params)
        cpu = exp.run_task(spec, plain, torch.device("cpu"))
        gpu = exp.run_task(spec, plain, torch.device(GPU))
        assert len(cpu) == len(gpu)
        pairs.extend(zip(cpu, gpu, strict=True))
    return pairs


def _close(a: float, b: float, rel: float, abs_: float) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


def test_teacher_student_endpoints_agree() -> None:
    pairs = _both("width-sweep", SWEEP)
    assert len(pairs) == 16
    for cpu, gpu in pairs:
        assert (cpu["width"], cpu["member"], cpu["kind"]) == (
            gpu["width"],
            gpu["member"],
            gpu["kind"],
        )
        assert _close(cpu["loss"], gpu["loss"], 1e-6, 1e-9), (cpu, gpu)
        for key in ("param_norm", "eig_min", "eig_max"):
            assert _close(cpu[key], gpu[key], 1e-6, 1e-8), (key, cpu, gpu)


def test_imp_on_digits_agrees() -> None:
    pairs = _both("lottery", LOTTERY)
    assert pairs
    for cpu, gpu in pairs:
        assert set(cpu) == set(gpu)
        for key, value in cpu.items():
            if key == "wall_time" or "seconds" in key or isinstance(value, (str, bool)):
                assert key == "wall_time" or "seconds" in key or value == gpu[key], key
                continue
            if not isinstance(value, (int, float)):
                continue
            if key == "density":
                assert value == gpu[key]
            elif "acc" in key:
                scale = 100.0 if max(abs(value), abs(gpu[key])) > 1.0 else 1.0
                assert _close(value, gpu[key], 0.0, 0.02 * scale), (key, value, gpu[key])
            elif "loss" in key:
                assert _close(value, gpu[key], 1e-3, 1e-6), (key, value, gpu[key])


def _module_and_data(device: str) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(256, 1, generator=gen, dtype=torch.float64)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    return model.to(device), (x.to(device), y.to(device))


def test_curvature_agrees() -> None:
    loss = nn.MSELoss()
    results = {}
    for device in ("cpu", GPU):
        model, data = _module_and_data(device)
        hessian = exact_hessian(model, loss, data).cpu()
        top = lanczos_eigs(model, loss, data, k=3, return_eigenvectors=False)
        results[device] = (hessian, top.eigenvalues)
    (h_cpu, e_cpu), (h_gpu, e_gpu) = results["cpu"], results[GPU]
    assert torch.allclose(h_gpu, h_cpu, rtol=1e-10, atol=1e-12)
    assert torch.allclose(e_gpu, e_cpu, rtol=1e-8, atol=0.0)


def _device_of(call, threads=None, worker=None):
    from escapelab.runner.executors import TaskResult

    return TaskResult(call.task.key, [{"device": call.device}], 0.0, worker or "")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_each_dask_worker_takes_a_gpu_of_its_own() -> None:
    distributed = pytest.importorskip("distributed")
    from escapelab.runner.executors import TaskCall, dask_task

    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as lc,
        distributed.Client(lc, set_as_default=False) as client,
    ):
        names = {}
        for address, info in client.scheduler_info()["workers"].items():
            call = TaskCall("width-sweep", {}, Task(f"k{info['name']}"), "cuda")
            future = client.submit(dask_task, _device_of, call, workers=[address], pure=False)
            names[info["name"]] = future.result().records[0]["device"]
    assert sorted(names.values()) == ["cuda:0", "cuda:1"]
