"""A fused loss-and-gradient kernel for one-hidden-layer ensembles on CPUs (Numba).

For every member e and every sample n of a shared data set (half mean squared error)

    z = W x_n + b,   h = sigma(z),   r = A h + c - y_n,
    L_e = 1/(2N) sum_n |r|^2,   dL/dA = r h^T / N,   delta = (A^T r) * sigma'(z),
    dL/dW = delta x_n^T / N,    dL/db = delta / N,   dL/dc = r / N,

computed in one pass over cache-sized blocks of samples: forward, residual and backward of a
block stay in a few kilobytes of scratch, so nothing of size (N, E * width) is ever written to
memory (the torch path of :class:`~escapelab.problems.objective.DataObjective` streams three
such blocks through memory per step). The work is split into tasks (member, slice of samples),
run in parallel by Numba's thread pool; the slices' partial sums are added at the end.

The innermost loops run over the samples of a block (inputs are stored transposed, (d, N)), so
LLVM vectorises them; the two products with W work on register blocks (four hidden units by
four inputs forward, two by four for dL/dW), so each load of a block row feeds several FMAs.
Indices are unsigned: Numba's wraparound test on signed indices stops vectorisation, and the
alternative, slicing 1-d views, changes shared reference counts atomically on every slice.

Numba has no vectorised ``exp`` without Intel's SVML, so the exponential used by tanh, sigmoid,
softplus and erf's slope is written here (range reduction x = k ln 2 + r, |r| <= ln 2 / 2, a
Taylor polynomial in r and the power 2^k assembled from its exponent bits; Cody & Waite,
"Software Manual for the Elementary Functions", 1980, ch. 6), to about one unit in the last
place in float32 and float64 (measured: at most 1.2 ulp over the whole range). The polynomial
is evaluated by Estrin's scheme (Knuth, TAOCP vol. 2, sec. 4.6.4) except for its last two
Horner steps: a shorter chain of dependent FMAs (whose latency limited the float64 tanh), with
the roundings that matter still scaled down by r. tanh is 1 - 2 / (exp(2z) + 1), as accurate in
absolute terms as torch's own fused path (within a few ulps of 1). erf and log1p call the C
library per element.

Numba is a dependency of escapelab (binary wheels, no compiler needed), but where it cannot be
imported (a platform without wheels) :func:`available` says so and callers fall back to the
torch path, with a one-line notice (:func:`notice_fallback`). The Numba code itself lives in
:mod:`escapelab.problems.shallow_numba`, imported on first use (compiled once, then cached on
disk by Numba).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture

ACTIVATION_CODES: dict[str, int] = {
    "linear": 0,
    "relu": 1,
    "tanh": 2,
    "sigmoid": 3,
    "softplus": 4,
    "erf": 5,
}
SUPPORTED_DTYPES = (torch.float32, torch.float64)
BLOCK = 256  # samples per block: (3 width + out + d) * BLOCK values of scratch, in L1/L2
_notice_given = False
# Numba's "workqueue" pool is not re-entrant: calls from several Python threads take turns
_kernel_lock = threading.Lock()
# the kernel's thread count while :func:`torch_serial` holds torch at one thread (None: torch's),
# and how many holds are open
_pinned_threads: int | None = None
_serial_depth = 0
_serial_lock = threading.Lock()


@functools.cache
def available() -> bool:
    """Whether the Numba kernel can run here (Numba installed; it is imported on first use)."""
    return importlib.util.find_spec("numba") is not None


def supports(arch: Architecture, theta: Tensor) -> bool:
    """Whether :func:`loss_and_grad` handles this architecture and these parameters."""
    return (
        len(arch.widths) == 1
        and arch.activation in ACTIVATION_CODES
        and theta.dtype in SUPPORTED_DTYPES
        and theta.device.type == "cpu"
    )


def notice_fallback() -> None:
    """Say once per process, in one line, that the fused kernel is missing (no Numba)."""
    global _notice_given
    if not _notice_given:
        _notice_given = True
        warnings.warn(
            "escapelab: numba is not installed, so one-hidden-layer training uses the slower "
            "torch path (pip install numba for the fused kernel)",
            RuntimeWarning,
            stacklevel=3,
        )


@contextmanager
def torch_serial() -> Iterator[None]:
    """Run torch's own ops on one thread for a while; the kernel keeps torch's thread count.

    For loops that alternate kernel calls with small torch ops (a trainer's optimizer and
    bookkeeping on (E, P) tensors). torch's OpenMP workers keep spinning for milliseconds after
    each parallel op (GNU OpenMP's default spin count), on the cores the kernel's threads need
    next: with two threads that cost the kernel about 30 % (21.3 against 15.2 ms per
    evaluation at E = 256, float32, once ``OMP_WAIT_POLICY=PASSIVE`` stopped the spinning). On
    one thread torch starts no workers, and its ops on (E, P) tensors stay cheap.

    Nested or concurrent uses (trainers in several Python threads) share one hold: the first
    to enter saves torch's thread count, the last to leave restores it.
    """
    global _pinned_threads, _serial_depth
    with _serial_lock:
        if _serial_depth == 0:
            _pinned_threads = torch.get_num_threads()
            torch.set_num_threads(1)
        _serial_depth += 1
    try:
        yield
    finally:
        with _serial_lock:
            _serial_depth -= 1
            if _serial_depth == 0:
                torch.set_num_threads(_pinned_threads or 1)
                _pinned_threads = None


def _offsets(arch: Architecture) -> tuple[int, int, int]:
    """Where b, A and c start in a member's flat parameters (-1: absent)."""
    m, d = arch.widths[0], arch.d_in
    off_b = m * d if arch.bias else -1
    off_a = m * d + (m if arch.bias else 0)
    off_c = off_a + arch.d_out * m if arch.output_bias else -1
    return off_b, off_a, off_c


def _splits(n_members: int, n_samples: int, threads: int) -> int:
    """Sample slices per member: enough tasks (4 per thread) to balance, slices >= 2 blocks."""
    want = -(-4 * threads // max(1, n_members))
    return max(1, min(want, n_samples // (2 * BLOCK)))


def loss_and_grad(
    arch: Architecture, theta: Tensor, x_t: Tensor, y_t: Tensor, with_grad: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Per-member losses (E,) and gradients (E, P) of 1/(2N) sum_n |f_e(x_n) - y_n|^2.

    ``x_t`` (d, N) and ``y_t`` (d_out, N) are the data transposed and contiguous, in theta's
    dtype. Uses as many threads as torch (``torch.get_num_threads()``, or the count it had when
    :func:`torch_serial` set it to one).
    """
    if not available():
        raise RuntimeError("the fused kernel needs numba (pip install numba)")
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        # Numba's OpenMP layer (its default here) brings a second OpenMP runtime whose idle
        # threads kept a core busy after every kernel call and slowed the torch ops that
        # follow in the same process ~10x on 2 cores (measured: 5 torch-path evaluations took
        # 5.2 s of CPU after one kernel call, 0.27 s with "workqueue"); the plain pthread pool
        # has no such threads. Takes effect if no parallel Numba code ran in this process yet.
        numba.config.THREADING_LAYER = "workqueue"
    from escapelab.problems.shallow_numba import kernel

    theta = theta.detach().contiguous()
    n_members, n = theta.shape[0], x_t.shape[1]
    threads = _pinned_threads or torch.get_num_threads()
    threads = max(1, min(threads, numba.config.NUMBA_NUM_THREADS))
    splits = _splits(n_members, n, threads)
    loss = torch.empty(n_members * splits, dtype=theta.dtype)
    grad = torch.zeros(n_members * splits, theta.shape[1] if with_grad else 1, dtype=theta.dtype)
    with _kernel_lock:
        numba.set_num_threads(threads)
        kernel(
            theta.numpy(),
            x_t.numpy(),
            y_t.numpy(),
            arch.widths[0],
            *_offsets(arch),
            ACTIVATION_CODES[arch.activation],
            with_grad,
            splits,
            BLOCK,
            loss.numpy(),
            grad.numpy(),
        )
    loss = loss.view(n_members, splits).sum(1) / n
    if not with_grad:
        return loss, None
    grad = grad.view(n_members, splits, -1).sum(1) if splits > 1 else grad
    return loss, grad.div_(n)
