"""Compile the fused kernel's C code (``shallow_fused.c``) on first use and load it with ctypes.

The C code ships as package data and is compiled once per precision with the machine's C
compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``) into ``<cache>/kernels``
(``$ESCAPELAB_CACHE``, default ``~/.cache/escapelab``). A library's file name carries a hash
of everything that shaped it: the source, the compiler's version line, the flags, and this
CPU's model and feature flags (it is built with ``-march=native``, so a cache shared by the
nodes of a heterogeneous cluster keeps one library per kind of CPU rather than loading one that
uses instructions another lacks).
Processes that compile at the same moment each write their own temporary file and rename it
into place, so a reader only ever sees a whole library.

Why C and not Numba (the kernel's first form): no LLVM in the process (Numba and llvmlite cost
134 MiB of resident memory per worker), a compile of about half a second instead of about
eleven, and control over the register blocks (measured 15-20 % faster per evaluation).

Nothing here is needed where no compiler exists: :func:`kernel` then raises
:class:`KernelUnavailable` with a one-line reason, and :mod:`escapelab.problems.shallow_kernel`
falls back to the torch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SOURCE = "shallow_fused.c"
FLAGS = (
    "-O3",
    "-std=gnu11",
    # a * b + c may become one fused multiply-add (one rounding instead of two)
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-fPIC",
    "-shared",
    "-pthread",
)
NATIVE = "-march=native"
PRECISIONS = {"f32": ("float", 1), "f64": ("double", 0)}
COMPILE_TIMEOUT_S = 300


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot be built or loaded here; the message says why, in one line."""


@dataclass(frozen=True)
class Library:
    """The functions of one precision's compiled library (see ``shallow_fused.c``)."""

    path: Path  # the compiled library
    fused: Callable[..., int]  # the loss-and-gradient kernel; 0 on success, -1 out of memory
    # its vectorised exp, erf and log1p (on [0, 1]) of n values, for the accuracy tests
    exp: Callable[..., None]
    erf: Callable[..., None]
    log1p: Callable[..., None]


def find_compiler() -> list[str] | None:
    """The C compiler's command: ``$CC`` (split like a shell would) or the first of cc, gcc and
    clang on the PATH; None when there is none."""
    configured = os.environ.get("CC", "").strip()
    if configured:
        command = shlex.split(configured)
        return command if shutil.which(command[0]) else None
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def _cpu_fingerprint() -> str:
    """This CPU's model and feature flags (Linux's /proc/cpuinfo; elsewhere what the platform
    module knows), which decide what ``-march=native`` emits."""
    lines: list[str] = []
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and line not in lines:
                    lines.append(line)
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        pass
    return "".join(lines) + platform.machine() + platform.processor()


def _compiler_version(compiler: list[str]) -> str:
    try:
        done = subprocess.run(
            [*compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise KernelUnavailable(f"the C compiler {compiler[0]!r} does not run ({error})") from error
    return done.stdout.splitlines()[0] if done.stdout else ""


def _kernel_dir() -> Path:
    """``<cache>/kernels``, or a private temporary folder when the cache is not writable."""
    from escapelab.data.datasets import cache_dir

    folder = cache_dir() / "kernels"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            return folder
    except OSError:
        return Path(tempfile.mkdtemp(prefix="escapelab-kernels-"))


def _compile(compiler: list[str], source: Path, target: Path, precision: str) -> None:
    """Compile ``source`` for one precision into ``target`` (atomically: a temporary file in
    the same folder, then a rename). Without ``-march=native`` if the compiler refuses it."""
    real, is_float = PRECISIONS[precision]
    defines = [f"-DREAL={real}", f"-DREAL_IS_FLOAT={is_float}", f"-DSUFFIX={precision}"]
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".so")
    os.close(handle)
    try:
        error = ""
        for extra in ([NATIVE], []):
            command = [*compiler, *FLAGS, *extra, *defines, str(source), "-o", temporary, "-lm"]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
                )
            except (OSError, subprocess.SubprocessError) as failure:
                raise KernelUnavailable(f"the C compiler failed to run ({failure})") from failure
            if done.returncode == 0:
                os.replace(temporary, target)
                return
            error = next(
                (line for line in done.stderr.splitlines() if "error" in line.lower()),
                done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no message",
            )
        raise KernelUnavailable(f"compiling the fused kernel failed: {error.strip()}")
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def kernel(precision: str) -> Library:
    """The compiled kernel for ``precision`` ("f32" or "f64"), built on first use.

    Raises :class:`KernelUnavailable` (one line: no compiler, a failed compile, a library
    that does not load). Either outcome is remembered for the process, so a failed compile
    is not retried on every evaluation; :func:`forget` clears that memory.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    outcome = _outcome(precision)
    if isinstance(outcome, KernelUnavailable):
        raise KernelUnavailable(str(outcome))
    return outcome


def forget() -> None:
    """Forget the remembered outcomes of :func:`kernel` (after installing a compiler, or
    changing ``$CC``)."""
    _outcome.cache_clear()


@functools.cache
def _outcome(precision: str) -> Library | KernelUnavailable:
    try:
        return _build(precision)
    except KernelUnavailable as error:
        return error


def _build(precision: str) -> Library:
    """Compile (unless cached on disk) and load one precision's library."""
    compiler = find_compiler()
    if compiler is None:
        raise KernelUnavailable("no C compiler found (install gcc or clang, or set CC)")
    source_file = resources.files("escapelab.problems").joinpath(SOURCE)
    code = source_file.read_bytes()
    digest = hashlib.sha256()
    for part in (code, _compiler_version(compiler).encode(), " ".join(FLAGS).encode()):
        digest.update(part)
    digest.update(_cpu_fingerprint().encode())
    folder = _kernel_dir()
    target = folder / f"shallow_{precision}_{digest.hexdigest()[:16]}.so"
    if not target.exists():
        with resources.as_file(source_file) as source:
            _compile(compiler, source, target, precision)
    try:
        library = ctypes.CDLL(str(target))
    except OSError as error:
        raise KernelUnavailable(f"the compiled fused kernel does not load ({error})") from error
    fused = getattr(library, f"escapelab_fused_{precision}")
    pointer, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    # theta, members, params, x, y, d, n, n_out, m, off_b, off_a, off_c, code, with_grad,
    # splits, block, loss, grad, threads
    fused.argtypes = [pointer, i64, i64, pointer, pointer, *[i64] * 7, i32, i32, i64, i64]
    fused.argtypes += [pointer, pointer, i32]
    fused.restype = i32
    elementwise = []
    for name in ("exp", "erf", "log1p"):
        function = getattr(library, f"escapelab_{name}_{precision}")
        function.argtypes, function.restype = [pointer, pointer, i64], None
        elementwise.append(function)
    return Library(target, fused, *elementwise)
