/* The fused loss-and-gradient kernel of escapelab.problems.shallow_kernel, in C.

   Compiled on first use by escapelab.problems.shallow_build, once per precision: -DREAL=float
   or -DREAL=double. See shallow_kernel.py for the method. Samples are processed in blocks of
   `block` (a multiple of 2 * VL); a block's pre-activations, activations, slopes and residuals
   stay in a few kilobytes of per-thread scratch. The vector type below is GCC's and Clang's
   generic vector extension, one register wide: 8 floats or 4 doubles with AVX, 4 or 2
   elsewhere.

   Threads: the caller's thread plus threads - 1 POSIX threads take tasks (member, slice of
   samples) from a shared counter until none are left. */

#include <pthread.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef REAL
#define REAL double
#endif
typedef REAL real;

/* 32-byte vectors where AVX has 32-byte registers; 16 bytes elsewhere (SSE2, NEON), where
   wider generic vectors are split and passed through memory (measured 3-8x slower) */
#if defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#define VL ((int64_t)(VBYTES / sizeof(real)))
typedef real vec __attribute__((vector_size(VBYTES)));

#if REAL_IS_FLOAT
typedef int32_t ireal;
#else
typedef int64_t ireal;
#endif
typedef ireal ivec __attribute__((vector_size(VBYTES)));

static inline vec load(const real *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store(real *p, vec v) { memcpy(p, &v, sizeof v); }

/* Keeps v in a register: GCC otherwise folds a reused load into each FMA as a memory operand
   (one load per use; the forward pass then issued 12 loads per 8 FMAs instead of 6). */
#if defined(__x86_64__) && defined(__AVX__)
#define KEEP(v) __asm__("" : "+x"(v))
#else
#define KEEP(v) ((void)0)
#endif

static inline vec splat(real a) {
#if VBYTES == 32 && REAL_IS_FLOAT
    return (vec){a, a, a, a, a, a, a, a};
#elif VBYTES == 32 || REAL_IS_FLOAT
    return (vec){a, a, a, a};
#else
    return (vec){a, a};
#endif
}

static inline real hsum(vec v) {
    real s = v[0];
    for (int64_t l = 1; l < VL; l++) s += v[l];
    return s;
}

/* ------------------------------------------------------------------ the exponential

   exp(x) by range reduction x = k ln 2 + r, |r| <= ln 2 / 2, a Taylor polynomial in r and 2^k
   assembled from its exponent bits (Cody & Waite, "Software Manual for the Elementary
   Functions", 1980, ch. 6). Adding 1.5 * 2^(mantissa bits) to x log2(e) rounds it to an
   integer k held in the low mantissa bits, so 2^k is an integer add and shift, no float ->
   int conversion. The polynomial runs by Estrin's scheme (Knuth, TAOCP vol. 2, 4.6.4) except
   for its last two Horner steps, whose roundings are scaled down by r. Measured: within 1.2
   units in the last place over the whole range, both precisions. */

/* x limited to [lo, hi]; NaN stays NaN (so a diverged member reads as non-finite). With AVX,
   MAXPS / MINPS return their second operand when either is NaN, so the constant goes first;
   elsewhere both comparisons are false for NaN, which keeps it. */
static inline vec vclamp(vec x, real lo, real hi) {
#if defined(__AVX__) && REAL_IS_FLOAT
    return (vec)_mm256_min_ps((__m256)splat(hi), _mm256_max_ps((__m256)splat(lo), (__m256)x));
#elif defined(__AVX__)
    return (vec)_mm256_min_pd((__m256d)splat(hi), _mm256_max_pd((__m256d)splat(lo), (__m256d)x));
#else
    ivec below = x < lo, above = x > hi;
    ivec inside = ~(below | above);
    return (vec)(((ivec)x & inside) | ((ivec)splat(lo) & below) | ((ivec)splat(hi) & above));
#endif
}

static inline vec vexp(vec x) {
#if REAL_IS_FLOAT
    const real shift = 12582912.0f; /* 1.5 * 2^23 */
    x = vclamp(x, -87.0f, 88.0f);
    vec t = x * 1.4426950408889634f + shift;
    vec kf = t - shift;
    vec r = (x - kf * 0.693145751953125f) - kf * 1.428606765330187e-06f;
    vec r2 = r * r;
    /* 1/i! for i = 2..7: |r|^8 / 8! < 2^-30 */
    vec tail = (0.5f + r * (1.0f / 6)) +
               r2 * ((1.0f / 24 + r * (1.0f / 120)) + r2 * (1.0f / 720 + r * (1.0f / 5040)));
    vec p = 1.0f + r * (1.0f + r * tail);
    ivec bits = ((ivec)t + 127) << 23;
#else
    const real shift = 6755399441055744.0; /* 1.5 * 2^52 */
    x = vclamp(x, -708.0, 709.0);
    vec t = x * 1.4426950408889634 + shift;
    vec kf = t - shift;
    vec r = (x - kf * 6.93147180369123816490e-01) - kf * 1.90821492927058770002e-10;
    vec r2 = r * r;
    vec r4 = r2 * r2;
    /* 1/i! for i = 2..13: |r|^14 / 14! < 2^-63 */
    vec tail = ((1.0 / 2 + r * (1.0 / 6)) + r2 * (1.0 / 24 + r * (1.0 / 120))) +
               r4 * (((1.0 / 720 + r * (1.0 / 5040)) + r2 * (1.0 / 40320 + r * (1.0 / 362880))) +
                     r4 * ((1.0 / 3628800 + r * (1.0 / 39916800)) +
                           r2 * (1.0 / 479001600 + r * (1.0 / 6227020800.0))));
    vec p = 1.0 + r * (1.0 + r * tail);
    ivec bits = ((ivec)t + 1023) << 52;
#endif
    return p * (vec)bits;
}

/* ------------------------------------------------------------------ erf

   erf(x) for x >= 0 in two parts (odd symmetry gives the rest): below 1 its Taylor series in
   x^2, evaluated by Horner's rule (the terms shrink monotonically, so there is no
   cancellation); from 1 on, 1 - exp(-x^2) g(1 / x) / x, with g(t) = x exp(x^2) erfc(x) a smooth
   function of t = 1 / x given by a truncated Chebyshev series (Clenshaw's recurrence). The
   coefficients, and their accuracy, come from tools/erf_coefficients.py (50-digit
   arithmetic): relative error of the series below 2e-17 (float64) and 1e-9 (float32). Past
   x = 6 (float64) or 4 (float32) erfc is below half an ulp of 1 and t is held at the table's
   end. The caller passes exp(-x^2), which it needs anyway for erf's slope. */

static const double ERF_TAYLOR[19] = {
    1.1283791670955125739,
    -3.7612638903183752463e-1,
    1.1283791670955125739e-1,
    -2.6866170645131251759e-2,
    5.2239776254421878421e-3,
    -8.5483270234508528325e-4,
    1.2055332981789664251e-4,
    -1.4925650358406250977e-5,
    1.6462114365889247402e-6,
    -1.6365844691234924317e-7,
    1.480719281587921724e-8,
    -1.2290555301717927353e-9,
    9.4227590646504109706e-11,
    -6.7113668551641103779e-12,
    4.4632242632864773449e-13,
    -2.7835162072109213549e-14,
    1.6342614095367151894e-15,
    -9.0639708428086724792e-17,
    4.7633480405150681197e-18};
#if REAL_IS_FLOAT
/* ERFC_CHEB32: 11 terms on t in [0.25, 1], relative error 8.95e-10 */
static const double ERFC_CHEB32[11] = {
    4.8885150569847145253e-1,
    -6.1280469855419348635e-2,
    -8.6741066532826369713e-4,
    1.0548149615640758033e-3,
    -1.9392767062957868382e-4,
    1.9201959734960569227e-5,
    3.6619224803467134244e-7,
    -6.4741555968462025025e-7,
    1.6762492352905932508e-7,
    -2.7132414954808396622e-8,
    2.3288486003633511958e-9};
#else
/* ERFC_CHEB64: 28 terms on t in [0.166667, 1], relative error 1.6e-17 */
static const double ERFC_CHEB64[28] = {
    4.9471361578208072515e-1,
    -6.6279631879652265925e-2,
    -2.276464574236011656e-3,
    1.7172451281468661662e-3,
    -3.2014496358247315061e-4,
    2.67432259836705161e-5,
    3.9686957443440539181e-6,
    -2.2059099609177136328e-6,
    5.1882276098667206595e-7,
    -6.9999188369066834818e-8,
    -9.0712700878342862577e-10,
    3.8195155219284206037e-9,
    -1.3416438565181668035e-9,
    2.9478922180326529027e-10,
    -3.7867607999754392263e-11,
    -2.1671472561476031246e-12,
    3.1122292821541817219e-12,
    -1.1363842124992398742e-12,
    2.7739855277970222601e-13,
    -4.4590667637627906382e-14,
    1.0733133056291621727e-15,
    2.4789530202320669803e-15,
    -1.1596680074384579769e-15,
    3.456896098695937488e-16,
    -7.4857603909984773773e-17,
    9.6699181040896540699e-18,
    9.0121916203292598514e-19,
    -1.1147721561727051587e-18};
#endif

#if REAL_IS_FLOAT
#define TAYLOR_TERMS 11
#define CHEB ERFC_CHEB32
#define CHEB_TERMS ((int)(sizeof ERFC_CHEB32 / sizeof ERFC_CHEB32[0]))
#define CHEB_LO ((real)0.25)
#else
#define TAYLOR_TERMS 19
#define CHEB ERFC_CHEB64
#define CHEB_TERMS ((int)(sizeof ERFC_CHEB64 / sizeof ERFC_CHEB64[0]))
#define CHEB_LO ((real)(1.0 / 6.0))
#endif

static inline int any(ivec mask) {
    ireal seen = 0;
    for (int64_t l = 0; l < VL; l++) seen |= mask[l];
    return seen != 0;
}

/* erf of nv vectors at once (nv <= 4, a constant where this is inlined): Horner's and
   Clenshaw's recurrences are chains of dependent operations, so independent vectors side by
   side keep the FMA units busy (one vector at a time, the float64 erf spent ~60 % of its time
   waiting on them). A region is evaluated when any lane of any of the vectors needs it. */
static inline __attribute__((always_inline)) void verf_block(const vec *x, const vec *e,
                                                            vec *out, int nv) {
    const ivec sign = (ivec)splat(-0.0);
    vec a[4];
    ivec small[4], need_small = (ivec)splat(0), need_large = (ivec)splat(0);
    for (int v = 0; v < nv; v++) {
        a[v] = (vec)((ivec)x[v] & ~sign);
        small[v] = a[v] < 1;
        need_small |= small[v];
        need_large |= ~small[v];
        out[v] = splat(0);
    }
    if (any(need_small)) {
        vec a2[4], p[4];
        for (int v = 0; v < nv; v++) {
            a2[v] = a[v] * a[v];
            p[v] = splat((real)ERF_TAYLOR[TAYLOR_TERMS - 1]);
        }
        for (int n = TAYLOR_TERMS - 2; n >= 0; n--)
            for (int v = 0; v < nv; v++) p[v] = p[v] * a2[v] + (real)ERF_TAYLOR[n];
        for (int v = 0; v < nv; v++) out[v] = (vec)((ivec)(a[v] * p[v]) & small[v]);
    }
    if (any(need_large)) {
        /* t in [CHEB_LO, 1]; u in [-1, 1]; NaN stays NaN. Clenshaw's step written
           u2 b1 + (c_k - b2), so only one FMA per step waits on the previous step */
        vec t[4], u[4], u2[4], b1[4], b2[4];
        for (int v = 0; v < nv; v++) {
            t[v] = vclamp(1 / a[v], CHEB_LO, 1);
            u[v] = (2 * t[v] - (CHEB_LO + 1)) * (1 / (1 - CHEB_LO));
            u2[v] = 2 * u[v];
            b1[v] = b2[v] = splat(0);
        }
        for (int k = CHEB_TERMS - 1; k >= 1; k--)
            for (int v = 0; v < nv; v++) {
                vec b0 = u2[v] * b1[v] + ((real)CHEB[k] - b2[v]);
                b2[v] = b1[v];
                b1[v] = b0;
            }
        for (int v = 0; v < nv; v++) {
            vec g = u[v] * b1[v] + ((real)CHEB[0] - b2[v]);
            vec large = 1 - e[v] * g * t[v];
            out[v] = (vec)((ivec)out[v] | ((ivec)large & ~small[v]));
        }
    }
    for (int v = 0; v < nv; v++) out[v] = (vec)((ivec)out[v] | ((ivec)x[v] & sign));
}

static inline vec verf(vec x, vec exp_minus_x2) {
    vec out;
    verf_block(&x, &exp_minus_x2, &out, 1);
    return out;
}

/* log1p(e) for 0 <= e <= 1 (softplus's exp(-|z|)): u = 1 + e rounded, plus the rounding's
   correction (e - (u - 1)) / u; log(u) = k ln 2 + log(m) with m = u or u / 2 in [1/sqrt 2,
   sqrt 2], and log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, by its series
   2 (s + s^3 / 3 + s^5 / 5 + ...), 13 terms in float64 (s^26 / 27 < 2^-68) and 7 in float32.
   NaN stays NaN. */
static inline vec vlog1p(vec e) {
#if REAL_IS_FLOAT
    const int terms = 7;
#else
    const int terms = 13;
#endif
    vec u = 1 + e;
    vec correction = (e - (u - 1)) / u;
    ivec halve = u > (real)1.41421356237309504880;
    vec m = (vec)(((ivec)(u * (real)0.5) & halve) | ((ivec)u & ~halve));
    vec k = (vec)((ivec)splat(1) & halve);
    vec s = (m - 1) / (m + 1), s2 = s * s;
    vec series = splat((real)1 / (2 * terms - 1));
    for (int j = terms - 2; j >= 0; j--) series = series * s2 + (real)1 / (2 * j + 1);
    /* ln 2 in two parts: k ln2_hi is exact */
    return k * (real)0.693145751953125 + (2 * s * series + (k * (real)1.42860682030941723212e-6 +
                                                           correction));
}

/* ------------------------------------------------------------------ activations

*/

enum { LINEAR, RELU, TANH, SIGMOID, SOFTPLUS, ERF };

/* Where the forward pass leaves its output: LINEAR and RELU are applied in registers (h and
   slope stored); for the others it stores z into h (RAW) and a row pass follows
   (activate_rows): measured, tanh and sigmoid ran 10-18 % slower applied in registers, their
   many constants and temporaries spilling out of the sixteen vector registers. */
#define RAW (-1)

static inline __attribute__((always_inline)) void activate_vec(int code, vec v, vec *h,
                                                              vec *slope) {
    const vec one = splat(1), zero = splat(0);
    if (code == RELU) {
        *h = (vec)((ivec)v & ~(ivec)(v <= zero)); /* NaN stays NaN */
        *slope = (vec)((ivec)one & (ivec)(v > zero));
    } else {
        *h = v;
        *slope = one;
    }
}

/* erf(z / sqrt 2) in place over nv vectors from h, its slope sqrt(2 / pi) exp(-z^2 / 2) into
   slope (nv a constant where this is inlined). */
static inline __attribute__((always_inline)) void erf_rows(real *h, real *slope, int nv) {
    const real inv_sqrt2 = (real)0.70710678118654752440;
    const real norm = (real)0.79788456080286535588; /* sqrt(2 / pi) */
    vec x[4], e[4], out[4];
    for (int v = 0; v < nv; v++) {
        x[v] = load(h + v * VL) * inv_sqrt2;
        e[v] = vexp(-x[v] * x[v]);
        store(slope + v * VL, norm * e[v]);
    }
    verf_block(x, e, out, nv);
    for (int v = 0; v < nv; v++) store(h + v * VL, out[v]);
}

/* tanh, sigmoid, softplus or erf on `cols` pre-activations of one row, in place in h (slope
   written); tanh and sigmoid two vectors per step: two independent chains of dependent
   operations. */
static void activate_rows(int code, real *h, real *slope, int64_t cols) {
    const vec one = splat(1), two = splat(2), zero = splat(0);
    if (code == TANH || code == SIGMOID) {
        for (int64_t i = 0; i < cols; i += 2 * VL) {
            vec a0, a1;
            if (code == TANH) {
                a0 = one - two / (vexp(two * load(h + i)) + one);
                a1 = one - two / (vexp(two * load(h + i + VL)) + one);
                store(slope + i, one - a0 * a0);
                store(slope + i + VL, one - a1 * a1);
            } else {
                a0 = one / (one + vexp(-load(h + i)));
                a1 = one / (one + vexp(-load(h + i + VL)));
                store(slope + i, a0 - a0 * a0);
                store(slope + i + VL, a1 - a1 * a1);
            }
            store(h + i, a0);
            store(h + i + VL, a1);
        }
        return;
    }
    if (code == ERF) {
        /* erf(z / sqrt 2) and its slope sqrt(2 / pi) exp(-z^2 / 2), four vectors per step
           where there are four */
        int64_t i = 0;
        for (; i + 4 * VL <= cols; i += 4 * VL) erf_rows(h + i, slope + i, 4);
        for (; i < cols; i += 2 * VL) erf_rows(h + i, slope + i, 2);
        return;
    }
    for (int64_t i = 0; i < cols; i += VL) {
        vec v = load(h + i);
        /* softplus as torch computes it: z itself (slope 1) above 20, else
           max(z, 0) + log1p(exp(-|z|)), with slope 1 / (1 + exp(-z)) (written with exp(-|z|)
           on both sides of 0) */
        vec e = vexp(-(vec)((ivec)v & ~(ivec)splat(-0.0)));
        ivec above = v > 20, positive = v >= zero;
        vec soft = (vec)((ivec)v & ~(ivec)(v <= zero)) + vlog1p(e);
        store(h + i, (vec)(((ivec)v & above) | ((ivec)soft & ~above)));
        vec s = (vec)(((ivec)one & positive) | ((ivec)e & ~positive)) / (one + e);
        store(slope + i, (vec)(((ivec)one & above) | ((ivec)s & ~above)));
    }
}

/* ------------------------------------------------------------------ the passes over a block

   The inputs are repacked once per call into strips of S = 2 * VL samples: strip q holds
   x[k, q S .. q S + S - 1] for k = 0 .. d - 1 contiguously (the last strip zero-padded). Read
   in place, the d rows of a (d, N) array lie N values apart, and for N a power of two they
   fall into the same few cache sets (measured: the forward pass ran 1.5x slower). */

#define S (2 * VL)

typedef struct {
    const real *theta, *xs, *y; /* parameters, packed inputs, targets (n_out, n_pad) */
    int64_t params, d, n, n_pad, n_out, m, off_b, off_a, off_c, per_split, splits, block, tasks;
    int code, with_grad;
    real *loss, *grad;
    int64_t next; /* the next task to take (atomic) */
    int failed;
} job_t;

/* z = b_j + sum_k W_jk x[k, i] for rows j0 .. j0 + rows - 1 (rows <= 4), in register blocks of
   `rows` hidden units by one strip: per input k two loads of x and `rows` broadcasts of W feed
   2 * rows FMAs. Linear and relu units are activated in registers, so their z is never
   stored (measured: 6-16 % less time per evaluation). */
static inline __attribute__((always_inline)) void forward_rows(int code, const real *w,
                                                              const real *bias, const real *xs,
                                                              int64_t d, int64_t j0, int rows,
                                                              int64_t cols, real *h, real *slope,
                                                              int64_t block) {
    for (int64_t i = 0; i < cols; i += S) {
        const real *strip = xs + (i / S) * d * S;
        vec acc[4][2];
        for (int r = 0; r < rows; r++) acc[r][0] = acc[r][1] = splat(bias ? bias[j0 + r] : 0);
        for (int64_t k = 0; k < d; k++) {
            vec x0 = load(strip + k * S), x1 = load(strip + k * S + VL);
            KEEP(x0);
            KEEP(x1);
            for (int r = 0; r < rows; r++) {
                vec wv = splat(w[(j0 + r) * d + k]);
                acc[r][0] += wv * x0;
                acc[r][1] += wv * x1;
            }
        }
        for (int r = 0; r < rows; r++)
            for (int half = 0; half < 2; half++) {
                real *at = h + (j0 + r) * block + i + half * VL;
                if (code == RAW) {
                    store(at, acc[r][half]);
                    continue;
                }
                vec a, s;
                activate_vec(code, acc[r][half], &a, &s);
                store(at, a);
                store(slope + (j0 + r) * block + i + half * VL, s);
            }
    }
}

/* The forward pass and activation of all m rows, compiled once per activation (`code` is a
   constant where this is inlined). */
static inline __attribute__((always_inline)) void forward(int code, const real *w,
                                                         const real *bias, const real *xs,
                                                         int64_t d, int64_t m, int64_t cols,
                                                         real *h, real *slope, int64_t block) {
    int64_t j = 0;
    for (; j + 4 <= m; j += 4) forward_rows(code, w, bias, xs, d, j, 4, cols, h, slope, block);
    for (; j < m; j++) forward_rows(code, w, bias, xs, d, j, 1, cols, h, slope, block);
}

/* dL/dW_jk, summed over the block's samples, for rows j0 .. j0 + rows - 1 (rows <= 2) and
   inputs k0 .. k0 + ks - 1 (ks <= 4), in register blocks: per vector of samples rows + ks
   loads feed rows * ks FMAs. The sums stay vectors (gw, one per weight), added across the
   lanes once per task rather than once per block. */
static inline __attribute__((always_inline)) void weight_grad_rows(const real *delta,
                                                                  const real *xs, int64_t d,
                                                                  int64_t j0, int rows,
                                                                  int64_t k0, int ks,
                                                                  int64_t cols, int64_t block,
                                                                  vec *gw) {
    vec acc[2][4];
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < ks; c++) acc[r][c] = splat(0);
    /* strip by strip, so the packed inputs' address is a pointer step, not a division */
    const real *strip = xs + k0 * S;
    for (int64_t i = 0; i < cols; i += S, strip += d * S)
        for (int64_t half = 0; half < S; half += VL) {
            vec xv[4];
            for (int c = 0; c < ks; c++) {
                xv[c] = load(strip + c * S + half);
                KEEP(xv[c]);
            }
            for (int r = 0; r < rows; r++) {
                vec dv = load(delta + (j0 + r) * block + i + half);
                KEEP(dv);
                for (int c = 0; c < ks; c++) acc[r][c] += dv * xv[c];
            }
        }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < ks; c++) gw[(j0 + r) * d + k0 + c] += acc[r][c];
}

/* dL/dW for rows j0 .. j0 + rows - 1 and every input: blocks of four inputs, then the rest
   (rows a constant where this is inlined). */
static inline __attribute__((always_inline)) void weight_grad(const real *delta, const real *xs,
                                                             int64_t d, int64_t j0, int rows,
                                                             int64_t cols, int64_t block,
                                                             vec *gw) {
    int64_t k = 0;
    for (; k + 4 <= d; k += 4) weight_grad_rows(delta, xs, d, j0, rows, k, 4, cols, block, gw);
    for (; k < d; k++) weight_grad_rows(delta, xs, d, j0, rows, k, 1, cols, block, gw);
}

/* One block of `cols` samples (a multiple of S) from strip xs and targets y; samples from
   `valid` on are padding, whose residual is zeroed so they add nothing. Returns sum |r|^2. */
static real block_pass(const job_t *job, const real *w, const real *xs, const real *y,
                       int64_t cols, int64_t valid, real *delta, real *h, real *slope, real *r,
                       real *g, vec *gw) {
    const int64_t m = job->m, d = job->d, n_out = job->n_out, B = job->block;
    const real *bias = job->off_b >= 0 ? w + job->off_b : NULL;
    const real *a = w + job->off_a;
    switch (job->code) {
    case LINEAR:
        forward(LINEAR, w, bias, xs, d, m, cols, h, slope, B);
        break;
    case RELU:
        forward(RELU, w, bias, xs, d, m, cols, h, slope, B);
        break;
    default:
        forward(RAW, w, bias, xs, d, m, cols, h, slope, B);
        for (int64_t j = 0; j < m; j++) activate_rows(job->code, h + j * B, slope + j * B, cols);
    }
    int64_t j;

    real total = 0;
    for (int64_t o = 0; o < n_out; o++) {
        real c = job->off_c >= 0 ? w[job->off_c + o] : 0;
        real *ro = r + o * B;
        vec sq = splat(0);
        for (int64_t i = 0; i < cols; i += VL) {
            vec acc = splat(c) - load(y + o * job->n_pad + i);
            for (j = 0; j < m; j++) acc += a[o * m + j] * load(h + j * B + i);
            store(ro + i, acc);
        }
        for (int64_t i = valid; i < cols; i++) ro[i] = 0;
        for (int64_t i = 0; i < cols; i += VL) {
            vec v = load(ro + i);
            sq += v * v;
        }
        total += hsum(sq);
    }
    if (!job->with_grad) return total;

    if (job->off_c >= 0)
        for (int64_t o = 0; o < n_out; o++) {
            vec acc = splat(0);
            for (int64_t i = 0; i < cols; i += VL) acc += load(r + o * B + i);
            g[job->off_c + o] += hsum(acc);
        }
    for (j = 0; j < m; j++) {
        vec acc_b = splat(0);
        real *dj = delta + j * B;
        const real *hj = h + j * B, *sj = slope + j * B;
        for (int64_t o = 0; o < n_out; o++) {
            real aoj = a[o * m + j];
            const real *ro = r + o * B;
            vec acc_a = splat(0);
            for (int64_t i = 0; i < cols; i += VL) {
                vec rv = load(ro + i);
                acc_a += rv * load(hj + i);
                vec part = aoj * rv;
                store(dj + i, o == 0 ? part : load(dj + i) + part);
            }
            g[job->off_a + o * m + j] += hsum(acc_a);
        }
        for (int64_t i = 0; i < cols; i += VL) {
            vec dv = load(dj + i) * load(sj + i);
            store(dj + i, dv);
            acc_b += dv;
        }
        if (job->off_b >= 0) g[job->off_b + j] += hsum(acc_b);
    }
    for (j = 0; j + 2 <= m; j += 2) weight_grad(delta, xs, d, j, 2, cols, B, gw);
    for (; j < m; j++) weight_grad(delta, xs, d, j, 1, cols, B, gw);
    return total;
}

/* ------------------------------------------------------------------ tasks and threads */

static void *worker(void *arg) {
    job_t *job = arg;
    const int64_t m = job->m, B = job->block, n_out = job->n_out;
    /* scratch: delta, h, slope (m rows each), r (n_out rows) and the vector sums of dL/dW
       (m * d vectors) */
    size_t bytes = (size_t)(3 * m + n_out) * (size_t)B * sizeof(real) +
                   (size_t)(m * job->d) * sizeof(vec);
    bytes = (bytes + 63) / 64 * 64; /* aligned_alloc wants a multiple of the alignment */
    real *scratch = aligned_alloc(64, bytes);
    if (!scratch) {
        __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    real *delta = scratch, *h = delta + m * B, *slope = h + m * B, *r = slope + m * B;
    vec *gw = (vec *)(r + n_out * B); /* B is a multiple of S, so this stays aligned */
    const int64_t weights = m * job->d;
    for (;;) {
        int64_t task = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (task >= job->tasks) break;
        int64_t e = task / job->splits;
        int64_t n0 = (task % job->splits) * job->per_split;
        int64_t n1 = n0 + job->per_split < job->n ? n0 + job->per_split : job->n;
        const real *w = job->theta + e * job->params;
        real *g = job->with_grad ? job->grad + task * job->params : NULL;
        if (job->with_grad) {
            memset(g, 0, (size_t)job->params * sizeof(real));
            memset(gw, 0, (size_t)weights * sizeof(vec));
        }
        real total = 0;
        for (int64_t s = n0; s < n1; s += B) {
            int64_t valid = n1 - s < B ? n1 - s : B;
            int64_t cols = (valid + S - 1) / S * S;
            total += block_pass(job, w, job->xs + (s / S) * job->d * S, job->y + s, cols, valid,
                                delta, h, slope, r, g, gw);
        }
        if (job->with_grad)
            for (int64_t q = 0; q < weights; q++) g[q] = hsum(gw[q]);
        /* one slice per member: this row is the member's, so scale it here, in parallel */
        const real scale = job->splits == 1 ? (real)1 / (real)job->n : 1;
        if (job->with_grad && job->splits == 1)
            for (int64_t q = 0; q < job->params; q++) g[q] *= scale;
        job->loss[task] = (real)0.5 * total * scale;
    }
    free(scratch);
    return NULL;
}

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

/* Per-member losses 1/(2n) sum_n |r|^2 into loss (members) and, with with_grad, their
   gradients into grad (members, params; may be NULL without with_grad). theta (members,
   params) holds W (m, d) row-major at 0, b at off_b, A (n_out, m) at off_a, c at off_c (an
   offset of -1: absent); x (d, n) and y (n_out, n) are the data transposed. Each member's
   samples are cut into `splits` slices (tasks run in parallel); with more than one, the
   slices' partial sums go to a scratch buffer and are added here after the threads finish.
   Everything, scaling included, happens in this call: a caller that followed it with small
   torch ops would wake torch's OpenMP threads, whose spinning slows the next call's threads.
   block must be a positive multiple of 2 * VL. Returns 0, or -1 when the block is not such a
   multiple or memory could not be had. */
int CAT(escapelab_fused_, SUFFIX)(const real *theta, int64_t members, int64_t params,
                                  const real *x, const real *y, int64_t d, int64_t n,
                                  int64_t n_out, int64_t m, int64_t off_b, int64_t off_a,
                                  int64_t off_c, int code, int with_grad, int64_t splits,
                                  int64_t block, real *loss, real *grad, int threads) {
    if (block <= 0 || block % S != 0 || splits <= 0) return -1;
    const int64_t n_pad = (n + S - 1) / S * S;
    /* slices start on whole blocks, so only the last block of the last slice is partial */
    const int64_t per_split = ((n + splits - 1) / splits + block - 1) / block * block;
    const int64_t tasks = members * splits, grad_row = with_grad ? params : 0;
    size_t packed = (size_t)(d + n_out) * (size_t)n_pad;
    size_t partial = splits > 1 ? (size_t)tasks * (size_t)(1 + grad_row) : 0;
    /* one allocation: the packed inputs and targets, then the slices' partial sums */
    real *xs = aligned_alloc(64, ((packed + partial) * sizeof(real) + 63) / 64 * 64);
    if (!xs) return -1;
    real *yp = xs + d * n_pad, *partial_loss = yp + n_out * n_pad;
    real *partial_grad = partial_loss + tasks;
    for (int64_t q = 0; q < n_pad / S; q++)
        for (int64_t k = 0; k < d; k++)
            for (int64_t l = 0; l < S; l++) {
                int64_t i = q * S + l;
                xs[(q * d + k) * S + l] = i < n ? x[k * n + i] : 0;
            }
    for (int64_t o = 0; o < n_out; o++)
        for (int64_t i = 0; i < n_pad; i++) yp[o * n_pad + i] = i < n ? y[o * n + i] : 0;
    job_t job = {.theta = theta, .xs = xs, .y = yp, .params = params, .d = d, .n = n,
                 .n_pad = n_pad, .n_out = n_out, .m = m, .off_b = off_b, .off_a = off_a,
                 .off_c = off_c, .per_split = per_split, .splits = splits, .block = block,
                 .tasks = tasks, .code = code, .with_grad = with_grad,
                 .loss = splits > 1 ? partial_loss : loss,
                 .grad = splits > 1 ? partial_grad : grad};
    if (threads > 64) threads = 64;
    pthread_t ids[64];
    int started = 0;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&ids[started], NULL, worker, &job) != 0) break;
        started++;
    }
    worker(&job);
    for (int t = 0; t < started; t++) pthread_join(ids[t], NULL);
    if (splits > 1 && !job.failed) {
        const real scale = (real)1 / (real)n;
        for (int64_t e = 0; e < members; e++) {
            real total = 0;
            for (int64_t s = 0; s < splits; s++) total += partial_loss[e * splits + s];
            loss[e] = total * scale;
            const real *rows = partial_grad + e * splits * params;
            for (int64_t q = 0; q < grad_row; q++) {
                real sum = 0;
                for (int64_t s = 0; s < splits; s++) sum += rows[s * params + q];
                grad[e * params + q] = sum * scale;
            }
        }
    }
    free(xs);
    return job.failed ? -1 : 0;
}

/* exp, erf and log1p (on [0, 1]) of n values (out may be x): the kernel's own, for the
   accuracy tests. */
#define ELEMENTWISE(name, expression)                                                       \
    void CAT(CAT(escapelab_, name), CAT(_, SUFFIX))(const real *x, real *out, int64_t n) { \
        for (int64_t i = 0; i < n; i += VL) {                                              \
            real buffer[VL];                                                               \
            int64_t count = n - i < VL ? n - i : VL;                                       \
            memset(buffer, 0, sizeof buffer);                                              \
            memcpy(buffer, x + i, (size_t)count * sizeof(real));                           \
            vec v = load(buffer);                                                          \
            store(buffer, expression);                                                     \
            memcpy(out + i, buffer, (size_t)count * sizeof(real));                         \
        }                                                                                  \
    }

ELEMENTWISE(exp, vexp(v))
ELEMENTWISE(erf, verf(v, vexp(-v * v)))
ELEMENTWISE(log1p, vlog1p(v))
