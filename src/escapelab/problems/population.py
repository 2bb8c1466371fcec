"""Exact population losses of one-hidden-layer networks with standard Gaussian inputs.

With student f(x) = A sigma(W x + b) and teacher f*(x) = A* sigma(W* x + b*), x ~ N(0, I_d), the
population loss L = 1/2 E|f(x) - f*(x)|^2 is a quadratic form in the kernel

    K(w, v) = E[sigma(w.x + b_w) sigma(v.x + b_v)] = E[sigma(u) sigma(v)],

where (u, v) is a Gaussian pair with means (b_w, b_v) and covariance [[|w|^2, w.v], [w.v, |v|^2]].
So L costs O(m^2 d) kernel evaluations and needs no samples: the landscape of infinitely many data.
Student and teacher share the activation; the output layer is linear without bias.

Kernels, by activation:

* ``erf`` (erf(z / sqrt 2), bias-free): (2/pi) arcsin(w.v / sqrt((1 + |w|^2)(1 + |v|^2)))
  (Williams 1997; Saad & Solla 1995).
* ``relu`` (bias-free): the arc-cosine kernel of degree 1 (Cho & Saul 2009),
  |w||v| J(theta) / (2 pi), J(theta) = sin theta + (pi - theta) cos theta, theta the angle between
  w and v. See :func:`relu_kernel` for its smoothness: C^2 away from zero vectors, with third
  derivatives that jump where incoming vectors are collinear.
* ``linear`` (biases allowed): w.v + b_w b_v.
* ``tanh``, ``sigmoid``, ``softplus`` (biases allowed): a two-dimensional quadrature over (u, v),
  see :func:`quadrature_kernel`. Derivatives of these kernels come from Price's theorem
  (Price 1958): with G(a, b, c, mu, nu) the expectation as a function of the covariance entries
  a = |w|^2, b = |v|^2, c = w.v and the means mu, nu,

      dG/dc = E[sigma'(u) sigma'(v)],  dG/da = 1/2 E[sigma''(u) sigma(v)],
      dG/dmu = E[sigma'(u) sigma(v)],

  and so on to second order, every one a moment E[sigma^(p)(u) sigma^(q)(v)] with p + q <= 4 that
  the same quadrature computes. G is smooth in (a, b, c, mu, nu) on the whole covariance cone, so
  collinear and zero vectors need no care.

Autograd and the quadrature: differentiating through a 224 x 224 quadrature grid per unit pair
with forward-over-reverse Hessians would push every one of the P tangents through the grid. The
objective instead evaluates G, its gradient and its Hessian in (a, b, c, mu, nu) once per pair,
without autograd, and differentiates the second-order Taylor polynomial of G around that point,
composed with the (polynomial) map theta -> (a, b, c, mu, nu). At the evaluation point the value,
gradient and Hessian in theta are exactly those of the loss (up to quadrature error); derivatives
of third and higher order are not, and nothing in the library takes them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import Objective
from escapelab.problems.population_hessian import PAIR_FUNCTIONS, population_hessian

SUPPORTED = (
    "erf and relu without hidden biases; linear, tanh, sigmoid and softplus with or without "
    "hidden biases; one hidden layer, linear output without bias"
)
QUADRATURE_ACTIVATIONS = ("tanh", "sigmoid", "softplus")
BIAS_FREE_ACTIVATIONS = ("erf", "relu")
CLOSED_FORM_ACTIVATIONS = ("erf", "relu", "linear")
#: default number of quadrature nodes per axis (the grid has DEFAULT_ORDER^2 points)
DEFAULT_ORDER = 224
#: the quadrature integrates z over [-QUADRATURE_HALF_WIDTH, QUADRATURE_HALF_WIDTH]: the standard
#: normal mass outside is 1.2e-15
QUADRATURE_HALF_WIDTH = 8.0
#: accuracy the default order is checked to meet (relative to sqrt(K(w, w) K(v, v))) for incoming
#: norms up to DEFAULT_ORDER_MAX_NORM: the kernel and its first derivatives, and the second
#: derivatives for norms up to 3 (at 3.5 they are within 1e-10); see tests/test_population.py
DEFAULT_TOL = 1e-12
DEFAULT_ORDER_MAX_NORM = 3.5
# keeps |w| = sqrt(|w|^2 + _TINY) and its derivative finite at zero vectors; changes no norm above
# 1e-142 in float64
_TINY = 1e-300


def erf_kernel(w: Tensor, v: Tensor) -> Tensor:
    """E[erf(w.x/sqrt2) erf(v.x/sqrt2)] for rows of w (..., m, d) and v (..., k, d): (..., m, k)."""
    nw = torch.sqrt(1.0 + (w * w).sum(-1))
    nv = torch.sqrt(1.0 + (v * v).sum(-1))
    cos = (w @ v.transpose(-1, -2)) / (nw.unsqueeze(-1) * nv.unsqueeze(-2))
    return (2.0 / math.pi) * torch.asin(cos)


def linear_kernel(
    w: Tensor, v: Tensor, b_w: Tensor | None = None, b_v: Tensor | None = None
) -> Tensor:
    """E[(w.x + b_w)(v.x + b_v)] = w.v + b_w b_v for rows of w (..., m, d), v (..., k, d)."""
    k = w @ v.transpose(-1, -2)
    if b_w is not None and b_v is not None:
        k = k + b_w.unsqueeze(-1) * b_v.unsqueeze(-2)
    return k


def _arccos_j(rho: Tensor) -> Tensor:
    """J(theta) = sin theta + (pi - theta) cos theta as a function of rho = cos theta, for autograd.

    J'(rho) = pi - arccos rho is finite on [-1, 1] but J''(rho) = 1 / sqrt(1 - rho^2) is not, and
    arccos and sqrt(1 - rho^2) have infinite slopes at rho = +-1, so autograd through the plain
    formula returns inf * 0 = nan for collinear vectors. Instead this returns the second-order
    Taylor polynomial of J around the (detached) value of rho: exact value, first and second
    derivative at the point, with J'' capped at 1e8 (reached only where 1 - rho^2 < 1e-16, i.e.
    angles below 1e-8, where rho's own gradient vanishes like the angle, so the capped term is
    below 1e-8 there).
    """
    r0 = rho.detach().clamp(-1.0, 1.0)
    acos = torch.acos(r0)
    one_minus = (1.0 - r0 * r0).clamp_min(0.0)
    j0 = torch.sqrt(one_minus) + (math.pi - acos) * r0
    j1 = math.pi - acos
    j2 = torch.rsqrt(one_minus.clamp_min(1e-16))
    d = rho - rho.detach()
    return j0 + d * (j1 + 0.5 * j2 * d)


def relu_kernel(w: Tensor, v: Tensor) -> Tensor:
    """E[relu(w.x) relu(v.x)] = |w||v| (sin t + (pi - t) cos t) / (2 pi), t = angle(w, v).

    The arc-cosine kernel of degree 1 (Cho & Saul 2009) for rows of w (..., m, d), v (..., k, d):
    (..., m, k). Smoothness, which decides what autograd's Hessian means:

    * collinear nonzero vectors (t = 0 or pi): J(t) = pi - pi t^2/2 + t^3/3 + O(t^4) and
      J(pi - s) = s^3/3 + O(s^5), and t^2 is a smooth function of (w, v) there, so K is twice
      continuously differentiable (with a Lipschitz Hessian) but its third derivatives jump.
      The loss therefore has a true Hessian at collinear incoming vectors, and autograd returns it
      (the continuous limit; see :func:`_arccos_j` for how nan is avoided). A Newton refinement
      converges there, but expansions beyond second order (and finite differences of the Hessian)
      do not hold across such a point.
    * a zero vector w = 0: K grows like |w|, so the loss is not differentiable there. Values stay
      exact; the gradient is finite and equals the limit along directions orthogonal to v
      ((pi/2) v / (2 pi) = v / 4 for K(w, v)); the Hessian is of order 1e150 (meaningless).

    :func:`min_incoming_angle` reports how close a member is to either kind of point.
    """
    nw = torch.sqrt((w * w).sum(-1) + _TINY).unsqueeze(-1)
    nv = torch.sqrt((v * v).sum(-1) + _TINY).unsqueeze(-2)
    norms = nw * nv
    rho = (w @ v.transpose(-1, -2)) / norms
    return norms * _arccos_j(rho) / (2.0 * math.pi)


# -- quadrature kernels -----------------------------------------------------------------------


def _derivatives(activation: str, x: Tensor, k: int) -> list[Tensor]:
    """[sigma(x), sigma'(x), ..., sigma^(k)(x)] for k <= 4, in closed form."""
    if activation == "tanh":
        t = torch.tanh(x)
        if k == 0:
            return [t]
        t2 = t * t
        s = 1.0 - t2
        out = [t, s, -2.0 * t * s]
        if k >= 3:
            out += [s * (6.0 * t2 - 2.0), 8.0 * t * s * (2.0 - 3.0 * t2)]
        return out[: k + 1]
    if activation in ("sigmoid", "softplus"):
        p = torch.sigmoid(x)
        n_chain = k + 1 if activation == "sigmoid" else k
        chain = [p]
        if n_chain > 1:
            p1 = p * (1.0 - p)
            q = 1.0 - 2.0 * p
            chain += [p1, p1 * q]
            if n_chain > 3:
                chain += [p1 * q * q - 2.0 * p1 * p1, p1 * q**3 - 8.0 * p1 * p1 * q]
        if activation == "sigmoid":
            return chain[: k + 1]
        return [torch.nn.functional.softplus(x), *chain[:k]]
    if activation == "erf":
        g = math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * x * x)
        x2 = x * x
        out = [torch.special.erf(x / math.sqrt(2.0)), g, -x * g, (x2 - 1.0) * g]
        return [*out, (3.0 * x - x2 * x) * g][: k + 1]
    if activation == "linear":
        return [x, torch.ones_like(x), *(torch.zeros_like(x) for _ in range(3))][: k + 1]
    raise ValueError(f"no quadrature derivatives for activation {activation!r}")


def quadrature_rule(order: int, dtype: torch.dtype, device: torch.device | str = "cpu"):
    """Nodes z and weights of the truncated trapezoidal rule for E[g(z)], z ~ N(0, 1).

    ``order`` equispaced nodes on [-L, L], L = QUADRATURE_HALF_WIDTH, weights h phi(z). For
    integrands analytic in a strip |Im z| < s around the real axis the error decays like
    exp(-2 pi s / h) (Trefethen & Weideman 2014, "The exponentially convergent trapezoidal rule"),
    while Gauss-Hermite converges only like exp(-c sqrt(order)) there: for tanh(3 z), whose poles
    sit at |Im z| = pi / 6, 160 trapezoidal nodes reach 3e-14 where Gauss-Hermite of order 160
    leaves 1e-6.
    """
    if order < 2:
        raise ValueError(f"the quadrature order must be >= 2, got {order}")
    z = torch.linspace(-QUADRATURE_HALF_WIDTH, QUADRATURE_HALF_WIDTH, order, dtype=torch.float64)
    h = 2.0 * QUADRATURE_HALF_WIDTH / (order - 1)
    weights = h * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z.to(dtype=dtype, device=device), weights.to(dtype=dtype, device=device)


# (p, q) moments needed for the value, the gradient and the Hessian in (a, b, c, mu, nu)
_MOMENTS = {
    0: [(0, 0)],
    1: [(0, 0), (1, 0), (0, 1), (2, 0), (0, 2), (1, 1)],
    2: [(p, q) for p in range(5) for q in range(5) if p + q <= 4],
}


def gaussian_moments(
    activation: str,
    features: Tensor,
    derivatives: int = 2,
    order: int = DEFAULT_ORDER,
    chunk_points: int = 1 << 22,
) -> dict[tuple[int, int], Tensor]:
    """M_pq = E[sigma^(p)(u) sigma^(q)(v)] for Gaussian pairs given by ``features`` (N, 5).

    features = (a, b, c, mu, nu): Var u, Var v, Cov(u, v), E u, E v. With z1, z2 independent
    standard normals, u = mu + sqrt(a) z1 and v = nu + r z1 + s z2, r = c / sqrt(a),
    s = sqrt(b - r^2) (the Cholesky factor; r = 0 when a = 0), and a tensor-product trapezoidal
    rule of ``order`` nodes per axis (:func:`quadrature_rule`): sigma^(p)(u) needs ``order``
    evaluations per pair and sigma^(q)(v) order^2. Returns the moments for the value
    (``derivatives`` = 0), the gradient (1) or the Hessian (2) of G; no autograd graph is built.
    Pairs are processed in chunks of about ``chunk_points`` grid points.
    """
    needed = _MOMENTS[derivatives]
    max_p = max(p for p, _ in needed)
    max_q = max(q for _, q in needed)
    z, wts = quadrature_rule(order, features.dtype, features.device)
    step = max(1, chunk_points // (order * order))
    parts: dict[tuple[int, int], list[Tensor]] = {pq: [] for pq in needed}
    with torch.no_grad():
        for start in range(0, features.shape[0], step):
            a, b, c, mu, nu = features[start : start + step].unbind(-1)
            sa = torch.sqrt(a.clamp_min(0.0))
            r = torch.where(sa > 0, c / torch.where(sa > 0, sa, 1.0), 0.0)
            s = torch.sqrt((b - r * r).clamp_min(0.0))
            u = mu.unsqueeze(-1) + sa.unsqueeze(-1) * z  # (n, order)
            v_row = nu.unsqueeze(-1) + r.unsqueeze(-1) * z  # (n, order): the z1 part of v
            v = v_row.unsqueeze(-1) + (s.unsqueeze(-1) * z).unsqueeze(-2)  # (n, order, order)
            du = _derivatives(activation, u, max_p)
            dv = _derivatives(activation, v, max_q)
            inner = [dvq @ wts for dvq in dv]  # (n, order): integrals over z2
            for p, q in needed:
                parts[(p, q)].append((du[p] * inner[q]) @ wts)
    out = {pq: torch.cat(chunks) for pq, chunks in parts.items()}
    return out


def kernel_taylor(
    activation: str, features: Tensor, derivatives: int = 2, order: int = DEFAULT_ORDER
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """G, its gradient (N, 5) and Hessian (N, 5, 5) in (a, b, c, mu, nu), by Price's theorem.

    Entries (a, b, c, mu, nu = 0..4): dG/da = M20/2, dG/db = M02/2, dG/dc = M11, dG/dmu = M10,
    dG/dnu = M01; second derivatives add the same shifts, e.g. d2G/da2 = M40/4, d2G/dadc = M31/2,
    d2G/dc2 = M22, d2G/dadb = M22/4, d2G/dcdmu = M21 (the heat equation: the derivative in a
    variance is half the expected second derivative, in a covariance the mixed one).
    """
    m = gaussian_moments(activation, features, derivatives, order)
    if derivatives == 0:
        return m[(0, 0)], None, None
    grad = torch.stack([0.5 * m[(2, 0)], 0.5 * m[(0, 2)], m[(1, 1)], m[(1, 0)], m[(0, 1)]], -1)
    if derivatives == 1:
        return m[(0, 0)], grad, None
    # (row, col, p, q, factor): d2G / d(row) d(col) = factor * M_pq
    entries = [
        (0, 0, 4, 0, 0.25), (1, 1, 0, 4, 0.25), (2, 2, 2, 2, 1.0), (0, 1, 2, 2, 0.25),
        (0, 2, 3, 1, 0.5), (1, 2, 1, 3, 0.5), (0, 3, 3, 0, 0.5), (0, 4, 2, 1, 0.5),
        (1, 3, 1, 2, 0.5), (1, 4, 0, 3, 0.5), (2, 3, 2, 1, 1.0), (2, 4, 1, 2, 1.0),
        (3, 3, 2, 0, 1.0), (4, 4, 0, 2, 1.0), (3, 4, 1, 1, 1.0),
    ]  # fmt: skip
    zero = torch.zeros_like(m[(0, 0)])
    cells = [[zero] * 5 for _ in range(5)]
    for i, j, p, q, f in entries:
        cells[i][j] = cells[j][i] = f * m[(p, q)]
    hess = torch.stack([torch.stack(row, -1) for row in cells], -2)
    return m[(0, 0)], grad, hess


def pair_features(
    w: Tensor, v: Tensor, b_w: Tensor | None = None, b_v: Tensor | None = None
) -> Tensor:
    """(a, b, c, mu, nu) = (|w|^2, |v|^2, w.v, b_w, b_v) for all row pairs: (..., m, k, 5)."""
    m, k = w.shape[-2], v.shape[-2]
    a = (w * w).sum(-1).unsqueeze(-1).expand(*w.shape[:-2], m, k)
    b = (v * v).sum(-1).unsqueeze(-2).expand(*v.shape[:-2], m, k)
    c = w @ v.transpose(-1, -2)
    zero = torch.zeros_like(c)
    mu = zero if b_w is None else b_w.unsqueeze(-1).expand_as(c)
    nu = zero if b_v is None else b_v.unsqueeze(-2).expand_as(c)
    return torch.stack(torch.broadcast_tensors(a, b, c, mu, nu), -1)


def quadrature_kernel(
    activation: str,
    w: Tensor,
    v: Tensor,
    b_w: Tensor | None = None,
    b_v: Tensor | None = None,
    order: int = DEFAULT_ORDER,
) -> Tensor:
    """E[sigma(w.x + b_w) sigma(v.x + b_v)] by quadrature, (..., m, k), differentiable twice.

    The value is :func:`gaussian_moments`' M00; gradients and Hessians in w, v, b_w, b_v flow
    through the second-order Taylor polynomial of G in (a, b, c, mu, nu) (module docstring), so
    first and second derivatives are exact up to quadrature error and higher ones are not.
    """
    feats = pair_features(w, v, b_w, b_v)
    flat = feats.reshape(-1, 5)
    g0, g1, g2 = kernel_taylor(activation, flat.detach(), 2, order)
    return _taylor_value(flat, g0, g1, g2).reshape(feats.shape[:-1])


def _taylor_value(features: Tensor, g0: Tensor, g1: Tensor, g2: Tensor) -> Tensor:
    """G0 + g1.d + 1/2 d^T g2 d with d = features - detached features (zero in value)."""
    d = features - features.detach()
    return g0 + (d * (g1 + 0.5 * (g2 @ d.unsqueeze(-1)).squeeze(-1))).sum(-1)


def quadrature_error(
    activation: str,
    w: Tensor,
    v: Tensor,
    b_w: Tensor | None = None,
    b_v: Tensor | None = None,
    order: int = DEFAULT_ORDER,
) -> Tensor:
    """Estimated relative error of the order-``order`` quadrature kernel, (..., m, k).

    |K_n(w, v) - K_2n(w, v)| / sqrt(K_2n(w, w) K_2n(v, v)): the order-2n rule halves the step, and
    its error is the square of the order-n one or smaller (exponential convergence), so the
    difference is the order-n error. The denominator is the Cauchy-Schwarz bound on |K(w, v)|,
    a scale that does not vanish when K(w, v) does (orthogonal odd units).
    """
    with torch.no_grad():
        fine = quadrature_kernel(activation, w, v, b_w, b_v, 2 * order)
        coarse = quadrature_kernel(activation, w, v, b_w, b_v, order)
        kww = quadrature_kernel(activation, w, w, b_w, b_w, 2 * order).diagonal(0, -2, -1)
        kvv = quadrature_kernel(activation, v, v, b_v, b_v, 2 * order).diagonal(0, -2, -1)
        scale = torch.sqrt(kww.unsqueeze(-1) * kvv.unsqueeze(-2)).clamp_min(1e-300)
        return (coarse - fine).abs() / scale


def check_quadrature_order(
    activation: str,
    w: Tensor,
    b: Tensor | None = None,
    order: int = DEFAULT_ORDER,
    tol: float = DEFAULT_TOL,
) -> float:
    """Raise ValueError if ``order`` misses ``tol`` on the kernel of rows w (m, d) (and biases b).

    Returns the estimated relative error (:func:`quadrature_error`, all pairs of rows).
    """
    err = float(quadrature_error(activation, w, w, b, b, order).max())
    if not err <= tol:
        norm = float(torch.linalg.vector_norm(w, dim=-1).max())
        raise ValueError(
            f"quadrature order {order} reaches only an estimated relative error {err:.1e} on the "
            f"{activation} kernel of these weights (largest |w| = {norm:.2f}), above the requested "
            f"{tol:.0e}; raise the order (the error falls like exp(-c order)) or relax tol"
        )
    return err


def population_kernel(
    activation: str,
    w: Tensor,
    v: Tensor,
    b_w: Tensor | None = None,
    b_v: Tensor | None = None,
    order: int = DEFAULT_ORDER,
) -> Tensor:
    """K(w, v) = E[sigma(w.x + b_w) sigma(v.x + b_v)], x ~ N(0, I), for any supported activation.

    Rows of w (..., m, d) and v (..., k, d), biases (..., m) and (..., k) or None: (..., m, k).
    """
    with_bias = b_w is not None or b_v is not None
    if activation in BIAS_FREE_ACTIVATIONS and with_bias:
        raise ValueError(f"the population kernel of {activation!r} needs bias-free units")
    if activation == "erf":
        return erf_kernel(w, v)
    if activation == "relu":
        return relu_kernel(w, v)
    if activation == "linear":
        return linear_kernel(w, v, b_w, b_v)
    if activation in QUADRATURE_ACTIVATIONS:
        return quadrature_kernel(activation, w, v, b_w, b_v, order)
    raise ValueError(f"no population kernel for activation {activation!r}; supported: {SUPPORTED}")


def _angle(w: Tensor, v: Tensor) -> Tensor:
    """Angles between rows of w (..., m, d) and v (..., k, d): 2 atan2(|w^ - v^|, |w^ + v^|).

    Kahan's formula: accurate to rounding for tiny angles, where arccos of the cosine loses half
    the digits.
    """
    wh = w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(1e-300)
    vh = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(1e-300)
    diff = torch.linalg.vector_norm(wh.unsqueeze(-2) - vh.unsqueeze(-3), dim=-1)
    summ = torch.linalg.vector_norm(wh.unsqueeze(-2) + vh.unsqueeze(-3), dim=-1)
    return 2.0 * torch.atan2(diff, summ)


def min_incoming_angle(w: Tensor, teacher_w: Tensor) -> Tensor:
    """Per member, the smallest angle (radians) from any pair of incoming vectors to collinearity.

    w (E, m, d) student rows, teacher_w (k, d): min over student-student pairs i < j and
    student-teacher pairs of min(t, pi - t), t the angle between the two vectors; 0 when a
    student row is the zero vector. Where this is ~0 a relu member sits on a point where the
    loss's third derivatives jump (or, for a zero row, where the loss is not differentiable; see
    :func:`relu_kernel`), so expansions beyond second order do not hold there. Shape (E,).
    """
    with torch.no_grad():
        m = w.shape[-2]
        t_ss = _angle(w, w)
        iu = torch.triu_indices(m, m, 1, device=w.device)
        ss = t_ss[..., iu[0], iu[1]]
        st = _angle(w, teacher_w.to(w).expand(*w.shape[:-2], *teacher_w.shape)).flatten(-2)
        t = torch.cat([ss, st], -1)
        near = torch.minimum(t, math.pi - t).amin(-1)
        zero_row = (torch.linalg.vector_norm(w, dim=-1) == 0).any(-1)
        return torch.where(zero_row, torch.zeros_like(near), near)


def check_population_arch(arch: Architecture) -> None:
    """Raise ValueError unless ``arch`` has a population kernel; the message lists what does."""
    if len(arch.widths) != 1:
        raise ValueError(
            f"the exact population loss needs exactly one hidden layer, got {len(arch.widths)}; "
            f"supported: {SUPPORTED}"
        )
    if arch.output_bias:
        raise ValueError(
            f"the exact population loss needs a linear output without bias (output_bias=false); "
            f"supported: {SUPPORTED}"
        )
    act = arch.activation
    if act not in CLOSED_FORM_ACTIVATIONS + QUADRATURE_ACTIVATIONS:
        raise ValueError(
            f"the exact population loss has no kernel for activation {act!r}; supported: "
            f"{SUPPORTED}; use a finite sample (n_samples) otherwise"
        )
    if arch.bias and act in BIAS_FREE_ACTIVATIONS:
        raise ValueError(
            f"the exact population loss of {act!r} networks is implemented bias-free only "
            f"(set bias=false or use a finite sample); supported: {SUPPORTED}"
        )


class PopulationObjective(Objective):
    """L(theta) = 1/2 E_x |f_theta(x) - f_teacher(x)|^2 in closed form, for every member at once.

    Student and teacher are one-hidden-layer networks with the same activation (see
    :func:`check_population_arch`). erf, relu and linear kernels are closed forms differentiated
    by autograd through :meth:`member_loss`; for tanh, sigmoid and softplus the batched methods
    evaluate the kernels of all members' unit pairs in one quadrature pass (value only for
    :meth:`loss`, with first derivatives for :meth:`loss_and_grad`, with second for
    :meth:`hessian`) and autograd differentiates their second-order Taylor polynomials (module
    docstring). ``order`` is the quadrature's nodes per axis; at construction the teacher's own
    kernel is checked to meet ``tol`` (:func:`check_quadrature_order`), and
    :meth:`quadrature_error` checks any student.
    """

    def __init__(
        self,
        arch: Architecture,
        teacher_arch: Architecture,
        teacher_theta: Tensor,
        *,
        order: int = DEFAULT_ORDER,
        tol: float = DEFAULT_TOL,
    ):
        check_population_arch(arch)
        check_population_arch(teacher_arch)
        if teacher_arch.d_in != arch.d_in or teacher_arch.d_out != arch.d_out:
            raise ValueError("student and teacher must share input and output dimensions")
        if teacher_arch.activation != arch.activation:
            raise ValueError(
                f"student and teacher must share the activation, got {arch.activation!r} and "
                f"{teacher_arch.activation!r}"
            )
        self.arch, self.teacher_arch, self.teacher_theta = arch, teacher_arch, teacher_theta
        self.activation, self.order, self.tol = arch.activation, order, tol
        self.quadrature = self.activation in QUADRATURE_ACTIVATIONS
        t_layers = teacher_arch.unflatten(teacher_theta.reshape(-1))
        self.teacher_w, self.teacher_b = t_layers[0].weight, t_layers[0].bias
        self.teacher_a = t_layers[1].weight
        self.teacher_quadrature_error = 0.0
        if self.quadrature:
            self.teacher_quadrature_error = check_quadrature_order(
                self.activation, self.teacher_w, self.teacher_b, order, tol
            )
        k_tt = self.kernel(self.teacher_w, self.teacher_w, self.teacher_b, self.teacher_b)
        self.teacher_term = 0.5 * (self.teacher_a @ k_tt * self.teacher_a).sum()
        # loss = self term - cross term + teacher term, the first two about the third near a
        # global minimum, so the teacher term sets the loss's rounding floor
        self.loss_scale = 3 * float(self.teacher_term.abs())

    def to(self, dtype: torch.dtype) -> PopulationObjective:
        if dtype == self.teacher_theta.dtype:
            return self
        return PopulationObjective(
            self.arch,
            self.teacher_arch,
            self.teacher_theta.to(dtype),
            order=self.order,
            tol=self.tol,
        )

    def kernel(
        self, w: Tensor, v: Tensor, b_w: Tensor | None = None, b_v: Tensor | None = None
    ) -> Tensor:
        """This objective's K(w, v) (:func:`population_kernel` with its activation and order)."""
        return population_kernel(self.activation, w, v, b_w, b_v, self.order)

    def _teacher(self, like: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        tb = None if self.teacher_b is None else self.teacher_b.to(like)
        return self.teacher_w.to(like), tb, self.teacher_a.to(like)

    def member_loss(self, theta: Tensor) -> Tensor:
        layers = self.arch.unflatten(theta)
        w, b, a = layers[0].weight, layers[0].bias, layers[1].weight
        tw, tb, ta = self._teacher(theta)
        self_term = 0.5 * (a @ self.kernel(w, w, b, b) * a).sum()
        cross = (a @ self.kernel(w, tw, b, tb) * ta).sum()
        return self_term - cross + self.teacher_term.to(theta)

    # -- quadrature activations: one batched quadrature pass, then autograd on Taylor polynomials

    def _pair_terms(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Features (n_pairs, 5) of the unit pairs of one member and their loss coefficients.

        Pairs: student-student i <= j (K is symmetric; off-diagonal pairs count twice) then
        student-teacher; the loss is sum(coef * K(pair)) + the teacher term.
        """
        layers = self.arch.unflatten(theta)
        w, b, a = layers[0].weight, layers[0].bias, layers[1].weight
        tw, tb, ta = self._teacher(theta)
        m = w.shape[0]
        iu = torch.triu_indices(m, m, device=theta.device)
        ss = pair_features(w, w, b, b)[iu[0], iu[1]]
        st = pair_features(w, tw, b, tb).reshape(-1, 5)
        aa = (a.unsqueeze(-1) * a.unsqueeze(-2)).sum(0)[iu[0], iu[1]]
        ss_coef = torch.where(iu[0] == iu[1], 0.5, 1.0).to(theta) * aa
        st_coef = -(a.unsqueeze(-1) * ta.unsqueeze(-2)).sum(0).reshape(-1)
        return torch.cat([ss, st]), torch.cat([ss_coef, st_coef])

    def _taylor_loss(self, theta: Tensor, g0: Tensor, g1: Tensor, g2: Tensor) -> Tensor:
        feats, coefs = self._pair_terms(theta)
        return (coefs * _taylor_value(feats, g0, g1, g2)).sum() + self.teacher_term.to(theta)

    def _coefficients(self, theta: Tensor, derivatives: int) -> tuple[Tensor, Tensor, Tensor]:
        """Taylor coefficients of every member's pair kernels: (E, n), (E, n, 5), (E, n, 5, 5)."""
        with torch.no_grad():
            feats = torch.vmap(lambda t: self._pair_terms(t)[0])(theta.detach())
            e, n = feats.shape[:2]
            g0, g1, g2 = kernel_taylor(
                self.activation, feats.reshape(-1, 5), derivatives, self.order
            )
            g0 = g0.reshape(e, n)
            g1 = feats.new_zeros(e, n, 5) if g1 is None else g1.reshape(e, n, 5)
            g2 = feats.new_zeros(e, n, 5, 5) if g2 is None else g2.reshape(e, n, 5, 5)
        return g0, g1, g2

    def loss(self, theta: Tensor) -> Tensor:
        if not self.quadrature:
            return super().loss(theta)
        coefs = self._coefficients(theta, 0)
        with torch.no_grad():
            return torch.vmap(self._taylor_loss)(theta, *coefs)

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        if not self.quadrature:
            return super().loss_and_grad(theta)
        coefs = self._coefficients(theta, 1)
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = torch.vmap(self._taylor_loss)(theta, *coefs)
            (grad,) = torch.autograd.grad(losses.sum(), theta)
        return losses.detach(), grad

    def hessian(self, theta: Tensor, member_chunk: int | None = None) -> Tensor:
        fn = PAIR_FUNCTIONS.get(self.activation)
        if fn is not None and not self.arch.bias:  # closed form; see population_hessian
            layers = self.arch.unflatten(theta.detach())
            tw, _, ta = self._teacher(theta)
            with torch.no_grad():
                h = population_hessian(fn, layers[0].weight, layers[1].weight, tw, ta)
            return 0.5 * (h + h.mT)
        if not self.quadrature:
            return super().hessian(theta, member_chunk)
        chunk = member_chunk or self.default_hessian_chunk(theta)
        hess_fn = torch.vmap(torch.func.hessian(self._taylor_loss))
        out = theta.new_empty(theta.shape[0], theta.shape[1], theta.shape[1])
        with torch.no_grad():
            for start in range(0, theta.shape[0], chunk):
                part = theta[start : start + chunk].detach()
                h = hess_fn(part, *self._coefficients(part, 2))
                out[start : start + chunk] = 0.5 * (h + h.transpose(-1, -2))
        return out

    def default_hessian_chunk(self, theta: Tensor) -> int:
        # forward-over-reverse keeps about P tangents of every (n_pairs, 5, 5) coefficient block
        m, k = self.arch.widths[0], self.teacher_arch.widths[0]
        per_member = theta.shape[1] * (m * (m + 1) // 2 + m * k) * 40
        return max(1, min(theta.shape[0], int(2e8 // max(per_member, 1))))

    def quadrature_error(self, theta: Tensor) -> Tensor:
        """Per member (E,), the largest estimated relative quadrature error of its kernels.

        Over student-student and student-teacher pairs (:func:`quadrature_error`, order n vs 2n);
        zeros for closed-form activations.
        """
        if not self.quadrature:
            return theta.new_zeros(theta.shape[0])
        layers = self.arch.unflatten(theta.detach())
        w, b = layers[0].weight, layers[0].bias
        tw, tb, _ = self._teacher(theta)
        v = torch.cat([w, tw.expand(w.shape[0], *tw.shape)], -2)
        bv = None
        if b is not None or tb is not None:
            bs = b if b is not None else w.new_zeros(w.shape[:-1])
            bt = tb if tb is not None else tw.new_zeros(tw.shape[:-1])
            b, bv = bs, torch.cat([bs, bt.expand(w.shape[0], *bt.shape)], -1)
        err = quadrature_error(self.activation, w, v, b, bv, self.order)
        return err.flatten(-2).amax(-1)

    def min_incoming_angle(self, theta: Tensor) -> Tensor:
        """Per member (E,), :func:`min_incoming_angle` of its incoming vectors and the teacher's."""
        w = self.arch.unflatten(theta.detach())[0].weight
        return min_incoming_angle(w, self.teacher_w)
