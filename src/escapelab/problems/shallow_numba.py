"""The Numba code of :mod:`escapelab.problems.shallow_kernel` (imported on first use only: Numba
and LLVM add about 100 MB and half a second to a process that never runs the kernel).

See :mod:`escapelab.problems.shallow_kernel` for the method; this module holds the vectorisable
exponential, the activations, the three passes over a block of samples (forward, residual,
backward) and the parallel kernel that runs them.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic, overload

# ------------------------------------------------------------------ the exponential


def _pow2_codegen(bits: int, bias: int, mantissa: int, float_type):  # type: ignore[no-untyped-def]
    """LLVM code for 2**k from t = k + 1.5 * 2**mantissa (k in the low mantissa bits of t): add
    the exponent bias and shift those bits into the exponent field (integer ops that vectorise
    on AVX2, unlike a float64 -> int64 conversion)."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        int_type = ir.IntType(bits)
        biased = builder.add(builder.bitcast(args[0], int_type), ir.Constant(int_type, bias))
        return builder.bitcast(builder.shl(biased, ir.Constant(int_type, mantissa)), float_type)

    return codegen


@intrinsic
def _pow2_f32(typingctx, t):  # type: ignore[no-untyped-def]
    """2**k as float32 from t = k + 1.5 * 2**23, integer -126 <= k <= 127."""
    return types.float32(types.float32), _pow2_codegen(32, 127, 23, ir.FloatType())


@intrinsic
def _pow2_f64(typingctx, t):  # type: ignore[no-untyped-def]
    """2**k as float64 from t = k + 1.5 * 2**52, integer -1022 <= k <= 1023."""
    return types.float64(types.float64), _pow2_codegen(64, 1023, 52, ir.DoubleType())


def _exp(x):  # type: ignore[no-untyped-def]
    """exp(x). Called from plain Python this is NumPy's exp; inside the jitted kernel Numba
    replaces it by the vectorisable per-precision version of :func:`_exp_impl`."""
    return np.exp(x)


_F32 = np.float32
# float32: |r| <= ln2/2 and a degree-7 Taylor polynomial leave a remainder below 2^-30
_E32 = tuple(_F32(1.0 / math.factorial(i)) for i in range(8))
_LOG2E32, _LN2HI32, _LN2LO32 = (
    _F32(1.4426950408889634),
    _F32(0.693145751953125),
    _F32(1.428606765330187e-06),
)
_LO32, _HI32 = _F32(-87.0), _F32(88.0)
_SHIFT32 = _F32(1.5 * 2.0**23)
_SHIFT64 = 1.5 * 2.0**52
# float64: degree 13 leaves (ln2/2)^14 / 14! < 2^-63
_E64 = tuple(1.0 / math.factorial(i) for i in range(14))
_LN2HI64, _LN2LO64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10


@overload(_exp)
def _exp_impl(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        c0, c1, c2, c3, c4, c5, c6, c7 = _E32

        def exp32(x):  # type: ignore[no-untyped-def]
            x = min(max(x, _LO32), _HI32)
            # adding 1.5 * 2^23 rounds x log2(e) to an integer held in the low mantissa bits
            t = x * _LOG2E32 + _SHIFT32
            kf = t - _SHIFT32
            r = (x - kf * _LN2HI32) - kf * _LN2LO32
            # Horner's last two steps (each rounding scaled down by r) over Estrin's scheme for
            # the rest (three dependent steps instead of five)
            r2 = r * r
            p = c0 + r * (c1 + r * ((c2 + c3 * r) + r2 * (c4 + c5 * r + r2 * (c6 + c7 * r))))
            return p * _pow2_f32(t)

        return exp32
    if x == types.float64:
        c = _E64

        def exp64(x):  # type: ignore[no-untyped-def]
            x = min(max(x, -708.0), 709.0)
            t = x * 1.4426950408889634 + _SHIFT64
            kf = t - _SHIFT64
            r = (x - kf * _LN2HI64) - kf * _LN2LO64
            r2 = r * r
            r4 = r2 * r2
            tail = (c[2] + c[3] * r + r2 * (c[4] + c[5] * r)) + r4 * (
                (c[6] + c[7] * r + r2 * (c[8] + c[9] * r))
                + r4 * (c[10] + c[11] * r + r2 * (c[12] + c[13] * r))
            )
            p = c[0] + r * (c[1] + r * tail)
            return p * _pow2_f64(t)

        return exp64
    return None


# ------------------------------------------------------------------ activations

# Every index below is unsigned (np.uint64). Numba checks signed indices for negative values
# (Python's wraparound), which keeps LLVM from vectorising, so the earlier version sliced 1-d
# views instead; but each view costs its construction and an atomic increment and decrement of
# the shared array's reference count, hundreds of times per block. Unsigned indices need
# neither (with the register blocks below: 27.1 -> 20.1 ms per float32 evaluation at E = 256
# on one thread).
U = np.uint64

# error_model="numpy": Numba's default ("python") checks every division for zero to raise
# ZeroDivisionError, which keeps LLVM from vectorising the loops (measured 5x slower for tanh)
_OPTS = {"cache": True, "error_model": "numpy"}


@njit(fastmath={"contract"}, **_OPTS)
def _activate(code, z, h, slope, rows, cols):  # type: ignore[no-untyped-def]
    """h = sigma(z), slope = sigma'(z) on the block z[:rows, :cols]."""
    one = z.dtype.type(1.0)
    two = z.dtype.type(2.0)
    half = z.dtype.type(0.5)
    zero = z.dtype.type(0.0)
    for j in range(rows):
        if code == 0:
            for i in range(cols):
                h[j, i] = z[j, i]
                slope[j, i] = one
        elif code == 1:
            for i in range(cols):
                pos = z[j, i] > zero
                h[j, i] = z[j, i] if pos else zero
                slope[j, i] = one if pos else zero
        elif code == 2:
            for i in range(cols):
                t = one - two / (_exp(two * z[j, i]) + one)
                h[j, i] = t
                slope[j, i] = one - t * t
        elif code == 3:
            for i in range(cols):
                s = one / (one + _exp(-z[j, i]))
                h[j, i] = s
                slope[j, i] = s - s * s
        elif code == 4:
            # softplus as torch computes it: z itself (slope 1) above 20, log1p(exp(z)) below
            threshold = z.dtype.type(20.0)
            for i in range(cols):
                v = z[j, i]
                e = _exp(-abs(v))
                above = v > threshold
                if above:
                    slope[j, i] = one
                elif v >= zero:
                    slope[j, i] = one / (one + e)
                else:
                    slope[j, i] = e / (one + e)
                h[j, i] = v if above else max(v, zero) + math.log1p(e)
        else:
            # erf(z / sqrt 2) and its slope sqrt(2 / pi) exp(-z^2 / 2)
            inv_sqrt2 = z.dtype.type(1.0 / math.sqrt(2.0))
            norm = z.dtype.type(math.sqrt(2.0 / math.pi))
            for i in range(cols):
                v = z[j, i]
                slope[j, i] = norm * _exp(-half * v * v)
                h[j, i] = math.erf(v * inv_sqrt2)


# ------------------------------------------------------------------ the passes over a block

_FAST = {"reassoc", "contract", "nsz"}


@njit(fastmath=_FAST, **_OPTS)
def _forward(w, e, off_b, x_t, s, cols, z):  # type: ignore[no-untyped-def]
    """z[j, i] = b_j + sum_k W_jk x_t[k, s + i] for member e, in register blocks of four hidden
    units by four inputs (16 FMAs per four loads of x and four loads and stores of z)."""
    m, d = U(z.shape[0]), U(x_t.shape[0])
    zero = z.dtype.type(0.0)
    for j in range(m):
        bias = w[e, U(off_b) + j] if off_b >= 0 else zero
        for i in range(cols):
            z[j, i] = bias
    j = U(0)
    while j + U(4) <= m:
        j1, j2, j3 = j + U(1), j + U(2), j + U(3)
        k = U(0)
        while k + U(4) <= d:
            k1, k2, k3 = k + U(1), k + U(2), k + U(3)
            # row j of W starts at j * d; qa..qf: where rows j..j+3 meet input k
            qa, qb, qc, qf = j * d + k, j1 * d + k, j2 * d + k, j3 * d + k
            a0, a1, a2, a3 = w[e, qa], w[e, qa + U(1)], w[e, qa + U(2)], w[e, qa + U(3)]
            b0, b1, b2, b3 = w[e, qb], w[e, qb + U(1)], w[e, qb + U(2)], w[e, qb + U(3)]
            c0, c1, c2, c3 = w[e, qc], w[e, qc + U(1)], w[e, qc + U(2)], w[e, qc + U(3)]
            f0, f1, f2, f3 = w[e, qf], w[e, qf + U(1)], w[e, qf + U(2)], w[e, qf + U(3)]
            for i in range(cols):
                v0, v1, v2, v3 = x_t[k, s + i], x_t[k1, s + i], x_t[k2, s + i], x_t[k3, s + i]
                z[j, i] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
                z[j1, i] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
                z[j2, i] += c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3
                z[j3, i] += f0 * v0 + f1 * v1 + f2 * v2 + f3 * v3
            k += U(4)
        while k < d:
            a0, b0, c0, f0 = w[e, j * d + k], w[e, j1 * d + k], w[e, j2 * d + k], w[e, j3 * d + k]
            for i in range(cols):
                v = x_t[k, s + i]
                z[j, i] += a0 * v
                z[j1, i] += b0 * v
                z[j2, i] += c0 * v
                z[j3, i] += f0 * v
            k += U(1)
        j += U(4)
    while j < m:
        k = U(0)
        while k + U(4) <= d:
            k1, k2, k3 = k + U(1), k + U(2), k + U(3)
            qa = j * d + k
            a0, a1, a2, a3 = w[e, qa], w[e, qa + U(1)], w[e, qa + U(2)], w[e, qa + U(3)]
            for i in range(cols):
                v0, v1, v2, v3 = x_t[k, s + i], x_t[k1, s + i], x_t[k2, s + i], x_t[k3, s + i]
                z[j, i] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
            k += U(4)
        while k < d:
            a0 = w[e, j * d + k]
            for i in range(cols):
                z[j, i] += a0 * x_t[k, s + i]
            k += U(1)
        j += U(1)


@njit(fastmath=_FAST, **_OPTS)
def _residual(w, e, off_a, off_c, h, y_t, s, cols, r):  # type: ignore[no-untyped-def]
    """r[o, i] = c_o + sum_j A_oj h[j, i] - y_t[o, s + i]; returns sum |r|^2 over the block."""
    m, n_out = U(h.shape[0]), U(y_t.shape[0])
    zero = h.dtype.type(0.0)
    total = zero
    for o in range(n_out):
        c = w[e, U(off_c) + o] if off_c >= 0 else zero
        for i in range(cols):
            r[o, i] = c - y_t[o, s + i]
        for j in range(m):
            a = w[e, U(off_a) + o * m + j]
            for i in range(cols):
                r[o, i] += a * h[j, i]
        acc = zero
        for i in range(cols):
            acc += r[o, i] * r[o, i]
        total += acc
    return total


@njit(fastmath=_FAST, **_OPTS)
def _backward(w, e, off_b, off_a, off_c, x_t, s, cols, h, slope, r, delta, g, t):  # type: ignore[no-untyped-def]
    """Adds the block's gradient to g[t]: dL/dc, dL/dA, delta = (A^T r) * sigma'(z), dL/db,
    and dL/dW = delta x^T in register blocks of two hidden units by four inputs."""
    m, d, n_out = U(h.shape[0]), U(x_t.shape[0]), U(r.shape[0])
    zero = h.dtype.type(0.0)
    if off_c >= 0:
        for o in range(n_out):
            acc = zero
            for i in range(cols):
                acc += r[o, i]
            g[t, U(off_c) + o] += acc
    for j in range(m):
        if n_out == U(1):
            # one output (the usual case): delta, dL/dA and dL/db in one pass
            a = w[e, U(off_a) + j]
            acc_a = acc_b = zero
            for i in range(cols):
                acc_a += r[0, i] * h[j, i]
                dv = a * r[0, i] * slope[j, i]
                delta[j, i] = dv
                acc_b += dv
            g[t, U(off_a) + j] += acc_a
        else:
            for i in range(cols):
                delta[j, i] = zero
            for o in range(n_out):
                a = w[e, U(off_a) + o * m + j]
                acc = zero
                for i in range(cols):
                    acc += r[o, i] * h[j, i]
                    delta[j, i] += a * r[o, i]
                g[t, U(off_a) + o * m + j] += acc
            acc_b = zero
            for i in range(cols):
                delta[j, i] *= slope[j, i]
                acc_b += delta[j, i]
        if off_b >= 0:
            g[t, U(off_b) + j] += acc_b
    j = U(0)
    while j + U(2) <= m:
        j1 = j + U(1)
        k = U(0)
        while k + U(4) <= d:
            k1, k2, k3 = k + U(1), k + U(2), k + U(3)
            p0 = p1 = p2 = p3 = q0 = q1 = q2 = q3 = zero
            for i in range(cols):
                v0, v1, v2, v3 = x_t[k, s + i], x_t[k1, s + i], x_t[k2, s + i], x_t[k3, s + i]
                d0, d1 = delta[j, i], delta[j1, i]
                p0 += d0 * v0
                p1 += d0 * v1
                p2 += d0 * v2
                p3 += d0 * v3
                q0 += d1 * v0
                q1 += d1 * v1
                q2 += d1 * v2
                q3 += d1 * v3
            g[t, j * d + k] += p0
            g[t, j * d + k1] += p1
            g[t, j * d + k2] += p2
            g[t, j * d + k3] += p3
            g[t, j1 * d + k] += q0
            g[t, j1 * d + k1] += q1
            g[t, j1 * d + k2] += q2
            g[t, j1 * d + k3] += q3
            k += U(4)
        while k < d:
            p0 = q0 = zero
            for i in range(cols):
                v = x_t[k, s + i]
                p0 += delta[j, i] * v
                q0 += delta[j1, i] * v
            g[t, j * d + k] += p0
            g[t, j1 * d + k] += q0
            k += U(1)
        j += U(2)
    while j < m:
        for k in range(d):
            p0 = zero
            for i in range(cols):
                p0 += delta[j, i] * x_t[k, s + i]
            g[t, j * d + k] += p0
        j += U(1)


# ------------------------------------------------------------------ the kernel


@njit(parallel=True, fastmath=_FAST, **_OPTS)
def kernel(  # type: ignore[no-untyped-def]
    theta, x_t, y_t, m, off_b, off_a, off_c, code, with_grad, splits, block, loss, grad
):
    """Partial sums of one task (member e, sample slice s) into row e * splits + s.

    theta (E, P) flat parameters (W row-major at 0, b at off_b, A (out, m) at off_a, c at
    off_c; an offset of -1 means absent); x_t (d, N) and y_t (out, N) the data transposed;
    loss (E * splits,) gets sum_n |r|^2 / 2; grad (E * splits, P) the unscaled gradient.
    """
    n = x_t.shape[1]
    n_out = y_t.shape[0]
    dt = x_t.dtype.type
    per_split = (n + splits - 1) // splits
    for task in prange(theta.shape[0] * splits):
        e = U(task // splits)
        n0 = (task % splits) * per_split
        n1 = min(n, n0 + per_split)
        z = np.empty((m, block), dtype=x_t.dtype)  # then delta, once h and slope are made
        h = np.empty((m, block), dtype=x_t.dtype)
        slope = np.empty((m, block), dtype=x_t.dtype)
        r = np.empty((n_out, block), dtype=x_t.dtype)
        total = dt(0.0)
        t = U(task)
        for start in range(n0, n1, block):
            s, cols = U(start), U(min(block, n1 - start))
            _forward(theta, e, off_b, x_t, s, cols, z)
            _activate(code, z, h, slope, U(m), cols)
            total += _residual(theta, e, off_a, off_c, h, y_t, s, cols, r)
            if with_grad:
                _backward(theta, e, off_b, off_a, off_c, x_t, s, cols, h, slope, r, z, grad, t)
        loss[task] = dt(0.5) * total
