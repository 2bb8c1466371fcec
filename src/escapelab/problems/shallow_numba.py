"""The Numba code of :mod:`escapelab.problems.shallow_kernel` (imported on first use only: Numba
and LLVM add about 100 MB and half a second to a process that never runs the kernel).

See :mod:`escapelab.problems.shallow_kernel` for the method; this module holds the vectorisable
exponential, the activations and the kernel itself.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic, overload

# ------------------------------------------------------------------ the exponential


def _pow2_codegen(bits: int, bias: int, mantissa: int, float_type):  # type: ignore[no-untyped-def]
    """LLVM code for 2**k: the biased exponent k + bias shifted past the mantissa bits."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        int_type = ir.IntType(bits)
        biased = builder.add(args[0], ir.Constant(int_type, bias))
        return builder.bitcast(builder.shl(biased, ir.Constant(int_type, mantissa)), float_type)

    return codegen


@intrinsic
def _pow2_f32(typingctx, k):  # type: ignore[no-untyped-def]
    """2**k as float32 for integer -126 <= k <= 127."""
    return types.float32(types.int32), _pow2_codegen(32, 127, 23, ir.FloatType())


@intrinsic
def _pow2_f64(typingctx, k):  # type: ignore[no-untyped-def]
    """2**k as float64 for integer -1022 <= k <= 1023."""
    return types.float64(types.int64), _pow2_codegen(64, 1023, 52, ir.DoubleType())


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
# float64: degree 13 leaves (ln2/2)^14 / 14! < 2^-63
_E64 = tuple(1.0 / math.factorial(i) for i in range(14))
_LN2HI64, _LN2LO64 = 6.93147180369123816490e-01, 1.90821492927058770002e-10


@overload(_exp)
def _exp_impl(x):  # type: ignore[no-untyped-def]
    if x == types.float32:
        c0, c1, c2, c3, c4, c5, c6, c7 = _E32

        def exp32(x):  # type: ignore[no-untyped-def]
            x = min(max(x, _LO32), _HI32)
            kf = np.rint(x * _LOG2E32)
            r = (x - kf * _LN2HI32) - kf * _LN2LO32
            p = c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
            return p * _pow2_f32(np.int32(kf))

        return exp32
    if x == types.float64:
        c = _E64

        def exp64(x):  # type: ignore[no-untyped-def]
            x = min(max(x, -708.0), 709.0)
            kf = np.rint(x * 1.4426950408889634)
            r = (x - kf * _LN2HI64) - kf * _LN2LO64
            p = c[13]
            for i in range(12, -1, -1):
                p = c[i] + r * p
            return p * _pow2_f64(np.int64(kf))

        return exp64
    return None


# ------------------------------------------------------------------ activations


# error_model="numpy": Numba's default ("python") checks every division for zero to raise
# ZeroDivisionError, which keeps LLVM from vectorising the loops (measured 5x slower for tanh)
@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _activate(code, z, h, slope, rows, cols):  # type: ignore[no-untyped-def]
    """h = sigma(z), slope = sigma'(z) on the block z[:rows, :cols]."""
    one = z.dtype.type(1.0)
    two = z.dtype.type(2.0)
    half = z.dtype.type(0.5)
    if code == 0:
        for j in range(rows):
            zj, hj, sj = z[j], h[j], slope[j]
            for i in range(cols):
                hj[i] = zj[i]
                sj[i] = one
    elif code == 1:
        zero = z.dtype.type(0.0)
        for j in range(rows):
            zj, hj, sj = z[j], h[j], slope[j]
            for i in range(cols):
                pos = zj[i] > zero
                hj[i] = zj[i] if pos else zero
                sj[i] = one if pos else zero
    elif code == 2:
        for j in range(rows):
            zj, hj, sj = z[j], h[j], slope[j]
            for i in range(cols):
                t = one - two / (_exp(two * zj[i]) + one)
                hj[i] = t
                sj[i] = one - t * t
    elif code == 3:
        for j in range(rows):
            zj, hj, sj = z[j], h[j], slope[j]
            for i in range(cols):
                s = one / (one + _exp(-zj[i]))
                hj[i] = s
                sj[i] = s - s * s
    elif code == 4:
        # softplus as torch computes it: z itself (slope 1) above 20, log1p(exp(z)) below
        threshold = z.dtype.type(20.0)
        zero = z.dtype.type(0.0)
        for j in range(rows):
            zj, hj, sj = z[j], h[j], slope[j]
            for i in range(cols):
                v = zj[i]
                e = _exp(-abs(v))
                above = v > threshold
                if above:
                    sj[i] = one
                elif v >= zero:
                    sj[i] = one / (one + e)
                else:
                    sj[i] = e / (one + e)
                hj[i] = v if above else max(v, zero) + math.log1p(e)
    else:
        # erf(z / sqrt 2) and its slope sqrt(2 / pi) exp(-z^2 / 2)
        inv_sqrt2 = z.dtype.type(1.0 / math.sqrt(2.0))
        norm = z.dtype.type(math.sqrt(2.0 / math.pi))
        for j in range(rows):
            zj, hj, sj = z[j], h[j], slope[j]
            for i in range(cols):
                v = zj[i]
                sj[i] = norm * _exp(-half * v * v)
                hj[i] = math.erf(v * inv_sqrt2)


# ------------------------------------------------------------------ the kernel


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
def kernel(  # type: ignore[no-untyped-def]
    theta, x_t, y_t, m, off_b, off_a, off_c, code, with_grad, splits, block, loss, grad
):
    """Partial sums of one task (member e, sample slice s) into row e * splits + s.

    theta (E, P) flat parameters (W row-major at 0, b at off_b, A (out, m) at off_a, c at
    off_c; an offset of -1 means absent); x_t (d, N) and y_t (out, N) the data transposed;
    loss (E * splits,) gets sum_n |r|^2 / 2; grad (E * splits, P) the unscaled gradient.
    """
    d, n = x_t.shape
    n_out = y_t.shape[0]
    dt = x_t.dtype.type
    zero = dt(0.0)
    per_split = (n + splits - 1) // splits
    for task in prange(theta.shape[0] * splits):
        e = task // splits
        n0 = (task % splits) * per_split
        n1 = min(n, n0 + per_split)
        w = theta[e]
        g = grad[task]
        z = np.empty((m, block), dtype=x_t.dtype)
        h = np.empty((m, block), dtype=x_t.dtype)
        slope = np.empty((m, block), dtype=x_t.dtype)
        r = np.empty((n_out, block), dtype=x_t.dtype)
        delta = np.empty(block, dtype=x_t.dtype)
        total = zero
        for start in range(n0, n1, block):
            cols = min(block, n1 - start)
            # 1-d views indexed by the loop counter alone: LLVM vectorises these loops
            for j in range(m):
                zj = z[j]
                bias = w[off_b + j] if off_b >= 0 else zero
                for i in range(cols):
                    zj[i] = bias
                # four inputs per pass: one load and store of z per four FMAs
                for k in range(0, d - 3, 4):
                    w0, w1, w2, w3 = w[j * d + k : j * d + k + 4]
                    x0 = x_t[k, start : start + cols]
                    x1 = x_t[k + 1, start : start + cols]
                    x2 = x_t[k + 2, start : start + cols]
                    x3 = x_t[k + 3, start : start + cols]
                    for i in range(cols):
                        zj[i] += w0 * x0[i] + w1 * x1[i] + w2 * x2[i] + w3 * x3[i]
                for k in range(d - d % 4, d):
                    wjk = w[j * d + k]
                    xk = x_t[k, start : start + cols]
                    for i in range(cols):
                        zj[i] += wjk * xk[i]
            _activate(code, z, h, slope, m, cols)
            for o in range(n_out):
                ro = r[o]
                c = w[off_c + o] if off_c >= 0 else zero
                yo = y_t[o, start : start + cols]
                for i in range(cols):
                    ro[i] = c - yo[i]
                for j in range(m):
                    a = w[off_a + o * m + j]
                    hj = h[j]
                    for i in range(cols):
                        ro[i] += a * hj[i]
                acc = zero
                for i in range(cols):
                    acc += ro[i] * ro[i]
                total += acc
            if not with_grad:
                continue
            for o in range(n_out):
                if off_c >= 0:
                    ro = r[o]
                    acc = zero
                    for i in range(cols):
                        acc += ro[i]
                    g[off_c + o] += acc
            for j in range(m):
                hj, sj = h[j], slope[j]
                for i in range(cols):
                    delta[i] = zero
                for o in range(n_out):
                    ro = r[o]
                    a = w[off_a + o * m + j]
                    acc = zero
                    for i in range(cols):
                        acc += ro[i] * hj[i]
                        delta[i] += a * ro[i]
                    g[off_a + o * m + j] += acc
                acc = zero
                for i in range(cols):
                    delta[i] *= sj[i]
                    acc += delta[i]
                if off_b >= 0:
                    g[off_b + j] += acc
                for k in range(0, d - 3, 4):
                    x0 = x_t[k, start : start + cols]
                    x1 = x_t[k + 1, start : start + cols]
                    x2 = x_t[k + 2, start : start + cols]
                    x3 = x_t[k + 3, start : start + cols]
                    a0 = a1 = a2 = a3 = zero
                    for i in range(cols):
                        a0 += delta[i] * x0[i]
                        a1 += delta[i] * x1[i]
                        a2 += delta[i] * x2[i]
                        a3 += delta[i] * x3[i]
                    g[j * d + k] += a0
                    g[j * d + k + 1] += a1
                    g[j * d + k + 2] += a2
                    g[j * d + k + 3] += a3
                for k in range(d - d % 4, d):
                    xk = x_t[k, start : start + cols]
                    acc = zero
                    for i in range(cols):
                        acc += delta[i] * xk[i]
                    g[j * d + k] += acc
        loss[task] = dt(0.5) * total
