"""A fused loss-and-gradient kernel for one-hidden-layer ensembles on CPUs (C, compiled on use).

For every member e and every sample n of a shared data set (half mean squared error)

    z = W x_n + b,   h = sigma(z),   r = A h + c - y_n,
    L_e = 1/(2N) sum_n |r|^2,   dL/dA = r h^T / N,   delta = (A^T r) * sigma'(z),
    dL/dW = delta x_n^T / N,    dL/db = delta / N,   dL/dc = r / N,

computed in one pass over cache-sized blocks of samples: forward, residual and backward of a
block stay in a few kilobytes of scratch, so nothing of size (N, E * width) is ever written to
memory (the torch path of :class:`~escapelab.problems.objective.DataObjective` streams three
such blocks through memory per step). The work is split into tasks (member, slice of samples)
that POSIX threads take from a shared counter; the slices' partial sums are added at the end.

The code is C (``shallow_fused.c``, compiled on first use by
:mod:`escapelab.problems.shallow_build`) written with the compilers' generic vector types: the
inputs are repacked into strips of two vectors of samples; the forward pass keeps a block of
four hidden units by one strip in registers while it runs over the inputs, and dL/dW is summed
in register blocks of two hidden units by four inputs, its sums kept as vectors until a task
ends. Every activation is vectorised: tanh, sigmoid, softplus and erf's slope use an exponential by
range reduction, a Taylor polynomial by Estrin's scheme and 2^k from the exponent bits (Cody &
Waite, "Software Manual for the Elementary Functions", 1980), within 1.2 units in the last
place (ulp) over its whole range in both precisions; tanh is 1 - 2 / (exp(2z) + 1), as
accurate in absolute terms as torch's own (within a few ulps of 1); erf is a Taylor series
below 1 and a Chebyshev series of x exp(x^2) erfc(x) in 1/x above (within 2.3 ulp); softplus's
log1p is the atanh series with the addition's rounding corrected (within 2.9 ulp). Each is
tested against long-double or C-library references.

Without a C compiler (or when the compile fails) :func:`available` says so and callers fall back
to the torch path, with a one-line notice (:func:`notice_fallback`) that gives the reason.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture
from escapelab.problems import shallow_build

ACTIVATION_CODES: dict[str, int] = {
    "linear": 0,
    "relu": 1,
    "tanh": 2,
    "sigmoid": 3,
    "softplus": 4,
    "erf": 5,
}
BLOCK = 256  # samples per block: (3 width + out) * BLOCK values of scratch, in L1/L2
_PRECISION = {torch.float32: "f32", torch.float64: "f64"}  # the dtypes the kernel has
_notice_given = False
# the kernel's thread count while :func:`torch_serial` holds torch at one thread (None: torch's),
# and how many holds are open
_pinned_threads: int | None = None
_serial_depth = 0
_serial_lock = threading.Lock()


def available(dtype: torch.dtype = torch.float64) -> bool:
    """Whether the kernel for ``dtype`` runs here (compiles it on the first call, about half
    a second; the answer is remembered)."""
    return unavailable_reason(dtype) is None


def unavailable_reason(dtype: torch.dtype) -> str | None:
    """Why the kernel for ``dtype`` cannot run here, in one line; None when it can."""
    if dtype not in _PRECISION:
        return f"no fused kernel for {dtype}"
    try:
        shallow_build.kernel(_PRECISION[dtype])
    except shallow_build.KernelUnavailable as error:
        return str(error)
    return None


def supports(arch: Architecture, theta: Tensor) -> bool:
    """Whether :func:`loss_and_grad` handles this architecture and these parameters."""
    return (
        len(arch.widths) == 1
        and arch.activation in ACTIVATION_CODES
        and theta.dtype in _PRECISION
        and theta.device.type == "cpu"
    )


def notice_fallback(dtype: torch.dtype = torch.float64) -> None:
    """Say once per process, in one line, that the fused kernel is missing, and why."""
    global _notice_given
    if not _notice_given:
        _notice_given = True
        warnings.warn(
            f"escapelab: the fused kernel is unavailable ({unavailable_reason(dtype)}), so "
            "one-hidden-layer training uses the slower torch path",
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
    :func:`torch_serial` set it to one). Raises :class:`~escapelab.problems.shallow_build.
    KernelUnavailable` where :func:`available` is false.
    """
    library = shallow_build.kernel(_PRECISION[theta.dtype])
    theta = theta.detach().contiguous()
    n_members, n = theta.shape[0], x_t.shape[1]
    threads = max(1, _pinned_threads or torch.get_num_threads())
    splits = _splits(n_members, n, threads)
    loss = torch.empty(n_members, dtype=theta.dtype)
    grad = torch.empty(n_members, theta.shape[1], dtype=theta.dtype) if with_grad else None
    status = library.fused(
        theta.data_ptr(),
        n_members,
        theta.shape[1],
        x_t.data_ptr(),
        y_t.data_ptr(),
        x_t.shape[0],
        n,
        y_t.shape[0],
        arch.widths[0],
        *_offsets(arch),
        ACTIVATION_CODES[arch.activation],
        with_grad,
        splits,
        BLOCK,
        loss.data_ptr(),
        grad.data_ptr() if grad is not None else None,
        threads,
    )
    if status != 0:
        raise MemoryError("the fused kernel could not allocate its scratch memory")
    return loss, grad
