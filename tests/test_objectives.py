"""Oracle tests of the losses: fused backward vs autograd, Hessians vs finite differences, the
closed-form population loss vs Monte Carlo, and the population objective's preconditions."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from escapelab.nets.mlp import Architecture
from escapelab.problems import shallow_kernel
from escapelab.problems.objective import DataObjective, Objective
from escapelab.problems.population import PopulationObjective, erf_kernel
from escapelab.problems.teacher import make_teacher, student_objective

pytestmark = pytest.mark.usefixtures("single_thread")

ACT_NAMES = ("erf", "tanh", "softplus", "sigmoid", "relu", "linear")

# (d_in, widths, d_out, bias, output_bias)
SHAPES = [
    (3, (4,), 1, True, False),
    (3, (4,), 2, False, True),
    (2, (5,), 1, False, False),
    # the fused kernel's register blocks: 4 x 4 and 2 x 4 blocks with every kind of remainder
    (9, (7,), 1, True, False),
    (8, (8,), 2, True, True),
    (3, (4, 3), 1, True, True),
    (2, (3, 4), 2, False, False),
    (3, (3, 2, 4), 2, True, False),
    (2, (2, 3, 2), 1, False, True),
]


def _data(arch: Architecture, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, arch.d_in, generator=gen, dtype=torch.float64)
    y = torch.randn(n, arch.d_out, generator=gen, dtype=torch.float64)
    return x, y


def _reference(obj: Objective, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Direct autograd of the plain forward, one member at a time (no vmap, no fusion)."""
    losses, grads = [], []
    for e in range(theta.shape[0]):
        t = theta[e].detach().clone().requires_grad_(True)
        f = obj.arch.forward(t, obj.x)
        loss = 0.5 * ((f - obj.y) ** 2).sum() / obj.x.shape[0]
        (g,) = torch.autograd.grad(loss, t)
        losses.append(loss.detach())
        grads.append(g)
    return torch.stack(losses), torch.stack(grads)


KERNELS = ["torch", "fused"] if shallow_kernel.available() else ["torch"]


@pytest.mark.parametrize("activation", ACT_NAMES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(("kernel", "chunk_size"), [("torch", None), ("torch", 10), ("auto", None)])
def test_fused_loss_and_grad_equals_autograd(
    shape: tuple, activation: str, kernel: str, chunk_size: int | None
) -> None:
    d_in, widths, d_out, bias, output_bias = shape
    arch = Architecture(d_in, widths, d_out, activation, bias, output_bias)
    x, y = _data(arch, 37, seed=3)  # 37 = 3 * 10 + 7: the last chunk is short
    obj = DataObjective(arch, x, y, chunk_size=chunk_size, kernel=kernel)
    theta = arch.init(3, seed=5, scheme="normal", scale=0.8)
    loss, grad = obj.loss_and_grad(theta)
    ref_loss, ref_grad = Objective.loss_and_grad(obj, theta)
    assert loss.shape == (3,) and grad.shape == theta.shape
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)
    # the generic reference itself agrees with plain per-member autograd
    plain_loss, plain_grad = _reference(obj, theta)
    torch.testing.assert_close(ref_loss, plain_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ref_grad, plain_grad, rtol=1e-10, atol=1e-13)
    # loss without gradient is the same number, and the gradient is not trivially zero
    torch.testing.assert_close(obj.loss(theta), ref_loss, rtol=1e-12, atol=1e-14)
    assert grad.abs().max() > 1e-3


@pytest.mark.parametrize("activation", ACT_NAMES)
@pytest.mark.parametrize("widths", [(8,), (5, 4)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_float32_is_accurate_to_single_precision(
    widths: tuple, activation: str, bias: bool, kernel: str
) -> None:
    arch = Architecture(3, widths, 2, activation, bias=bias, output_bias=bias)
    x, y = _data(arch, 1000, seed=0)
    theta = arch.init(5, seed=1, scheme="normal")
    ref_loss, ref_grad = Objective.loss_and_grad(DataObjective(arch, x, y), theta)
    obj32 = DataObjective(arch, x.float(), y.float(), kernel=kernel)
    loss, grad = obj32.loss_and_grad(theta.float())
    assert loss.dtype == grad.dtype == torch.float32
    assert ((loss.double() - ref_loss).abs() / ref_loss).max() < 2e-6
    assert ((grad.double() - ref_grad).norm(dim=1) / ref_grad.norm(dim=1)).max() < 1e-5


needs_compiler = pytest.mark.skipif(
    not shallow_kernel.available(), reason="the fused kernel does not compile here (no C compiler)"
)


@needs_compiler
@pytest.mark.parametrize("activation", ACT_NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_fused_kernel_splits_samples_and_threads_without_changing_results(
    activation: str, dtype: torch.dtype
) -> None:
    # 2 members and 3,000 samples: the kernel splits every member's samples into slices (tasks
    # run in parallel), including a short last block; the result must not depend on that
    arch = Architecture(4, (6,), 1, activation, bias=True)
    x, y = _data(arch, 3000, seed=2)
    theta = arch.init(2, seed=4, scheme="normal")
    assert shallow_kernel._splits(2, 3000, threads=2) > 1
    ref_loss, ref_grad = _reference(DataObjective(arch, x, y), theta)
    obj = DataObjective(arch, x.to(dtype), y.to(dtype), kernel="fused")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        loss2, grad2 = obj.loss_and_grad(theta.to(dtype))
        torch.set_num_threads(1)
        loss1, grad1 = obj.loss_and_grad(theta.to(dtype))
    finally:
        torch.set_num_threads(previous)
    assert obj.uses_fused_kernel(theta.to(dtype))
    rtol = 1e-12 if dtype == torch.float64 else 2e-6
    for loss, grad in ((loss1, grad1), (loss2, grad2)):
        assert ((loss.double() - ref_loss).abs() / ref_loss).max() < rtol
        assert ((grad.double() - ref_grad).norm(dim=1) / ref_grad.norm(dim=1)).max() < 5 * rtol


@needs_compiler
def test_fused_kernel_propagates_nan_and_inf() -> None:
    # a diverging member must read as non-finite (the trainer records it as "diverged")
    arch = Architecture(3, (4,), 1, "tanh", bias=True)
    x, y = _data(arch, 50, seed=1)
    theta = arch.init(3, seed=0, scheme="normal")
    theta[1, 0], theta[2, -1] = float("nan"), float("inf")
    loss, grad = DataObjective(arch, x, y, kernel="fused").loss_and_grad(theta)
    assert torch.isfinite(loss[0]) and torch.isfinite(grad[0]).all()
    assert not torch.isfinite(loss[1]) and not torch.isfinite(loss[2])


@needs_compiler
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_kernel_exponential_is_within_1_5_ulp_over_its_whole_range(dtype: type) -> None:
    from escapelab.problems import shallow_build

    library = shallow_build.kernel("f32" if dtype == np.float32 else "f64")
    # the range it clamps to: no underflow below, no overflow above; 200,003 values, so the
    # last vector is partial
    low, top = (-87.0, 88.0) if dtype == np.float32 else (-708.0, 709.0)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1, 1, 100_000), rng.uniform(low, top, 100_000)])
    x = np.append(x, [0.0, low, top]).astype(dtype)
    out = np.empty_like(x)
    library.exp(x.ctypes.data, out.ctypes.data, x.size)
    exact = np.exp(x.astype(np.longdouble))
    ulps = np.abs(out.astype(np.longdouble) - exact) / np.spacing(exact.astype(dtype))
    assert ulps.max() < 1.5
    assert out[-3] == 1.0


def test_torch_serial_holds_torch_at_one_thread_and_the_kernel_at_the_callers_count() -> None:
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with shallow_kernel.torch_serial():
            assert torch.get_num_threads() == 1
            assert shallow_kernel._pinned_threads == 2
            with shallow_kernel.torch_serial():  # nested: the outer count stays
                assert shallow_kernel._pinned_threads == 2
            assert torch.get_num_threads() == 1 and shallow_kernel._pinned_threads == 2
        assert torch.get_num_threads() == 2 and shallow_kernel._pinned_threads is None
        # two holds (trainers in two threads) leaving in the order they entered: the count is
        # restored when the last one leaves, not by the first
        first, second = shallow_kernel.torch_serial(), shallow_kernel.torch_serial()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 1 and shallow_kernel._pinned_threads == 2
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 2 and shallow_kernel._pinned_threads is None
    finally:
        torch.set_num_threads(previous)


def test_kernel_choice_is_validated_and_a_missing_compiler_falls_back_with_one_notice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from escapelab.problems import shallow_build

    arch = Architecture(3, (4,), 1, "erf", bias=True)
    x, y = _data(arch, 40, seed=1)
    with pytest.raises(ValueError, match="kernel must be one of auto, fused, torch"):
        DataObjective(arch, x, y, kernel="cuda")
    # no compiler on the PATH and no $CC: the build says so in one line
    shallow_build.kernel.cache_clear()
    monkeypatch.setenv("CC", "no-such-compiler-here")
    monkeypatch.setattr(shallow_kernel, "_notice_given", False)
    try:
        with pytest.raises(ValueError, match=r"kernel='fused' is unavailable here \(no C compiler"):
            DataObjective(arch, x, y, kernel="fused")
        obj = DataObjective(arch, x, y)
        theta = arch.init(2, seed=0, scheme="normal")
        with pytest.warns(RuntimeWarning, match="fused kernel is unavailable") as record:
            loss, grad = obj.loss_and_grad(theta)
            obj.loss_and_grad(theta)
        assert len(record) == 1 and not obj.uses_fused_kernel(theta)
    finally:
        shallow_build.kernel.cache_clear()
    ref_loss, ref_grad = _reference(obj, theta)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)
