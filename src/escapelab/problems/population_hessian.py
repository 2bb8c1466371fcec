"""Exact Hessians of the population loss for kernels of the form K(w, v) = F(|w|^2, |v|^2, w.v).

Why not autograd: a forward-over-reverse Hessian through the kernel costs 10 to 100 ms per call
however small the network (dispatch of hundreds of small ops per tangent), and the certification
of endpoints (:mod:`escapelab.optim.full_batch`) takes hundreds of Newton iterations on a handful
of members. Here the Hessian is assembled from the partial derivatives of F on every unit pair,
with a few batched contractions: the same numbers to rounding, checked against autograd in
``tests/test_population_hessian.py``.

Method. With p = |w|^2, q = |v|^2, r = w.v and F's partials F_p, F_r, F_pp, F_pq, F_pr, F_qr, F_rr
(taken by autograd on the elementwise map (p, q, r) -> F, which is exact and cheap), the
derivatives of K(w, v) in its first argument and across its arguments are

    d1 K      = 2 F_p w + F_r v
    d1 d1 K   = 2 F_p I + 4 F_pp w w^T + 2 F_pr (w v^T + v w^T) + F_rr v v^T
    d1 d2 K   = F_r I + 4 F_pq w v^T + 2 F_pr w w^T + 2 F_qr v v^T + F_rr v w^T

(rows: components of w, columns: components of v). For the loss
L = 1/2 sum_ij (a_i.a_j) K(w_i, w_j) - sum_it (a_i.a*_t) K(w_i, w*_t) + const, with
G_ij = d1 K(w_i, w_j) and G*_it = d1 K(w_i, w*_t):

    d2L / dw_i dw_j   = (a_i.a_j) d1 d2 K(w_i, w_j)
                        + [i = j] (sum_j' (a_i.a_j') d1 d1 K(w_i, w_j')
                                   - sum_t (a_i.a*_t) d1 d1 K(w_i, w*_t))
    d2L / da_oi dw_j  = a_oj G_ji + [i = j] (sum_j' a_oj' G_ij' - sum_t a*_ot G*_it)
    d2L / da_oi da_o'j = [o = o'] K(w_i, w_j)

Kernels in this form: erf, (2/pi) arcsin(r / sqrt((1 + p)(1 + q))), and bias-free linear, r. The
arc-cosine (relu) kernel is not: its F has infinite partials at collinear vectors although K is
C^2 there (see :func:`escapelab.problems.population.relu_kernel`), so relu keeps autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

PairFunction = Callable[[Tensor, Tensor, Tensor], Tensor]


def erf_pair_function(p: Tensor, q: Tensor, r: Tensor) -> Tensor:
    """The erf kernel as a function of |w|^2, |v|^2 and w.v (Williams 1997)."""
    return (2.0 / math.pi) * torch.asin(r / torch.sqrt((1.0 + p) * (1.0 + q)))


def linear_pair_function(p: Tensor, q: Tensor, r: Tensor) -> Tensor:
    """The bias-free linear kernel w.v."""
    return r


PAIR_FUNCTIONS: dict[str, PairFunction] = {
    "erf": erf_pair_function,
    "linear": linear_pair_function,
}


def _grads(y: Tensor, xs: tuple[Tensor, ...], keep: bool) -> list[Tensor]:
    """Elementwise partials of y's elements in xs (differentiable again when ``keep``); zeros
    where y does not depend on one."""
    if not y.requires_grad:
        return [torch.zeros_like(x) for x in xs]
    grads = torch.autograd.grad(
        y.sum(), xs, create_graph=keep, retain_graph=True, allow_unused=True
    )
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs, strict=True)]


def _partials(fn: PairFunction, p: Tensor, q: Tensor, r: Tensor) -> dict[str, Tensor]:
    """F and the partials the Hessian needs, elementwise over the pairs (detached).

    p, q and r broadcast to the pair shape and are materialised there, so that each partial is
    that of its own pair (a broadcast input would sum its gradient over the other axis)."""
    shape = torch.broadcast_shapes(p.shape, q.shape, r.shape)
    p, q, r = (t.detach().expand(shape).clone().requires_grad_(True) for t in (p, q, r))
    with torch.enable_grad():
        f = fn(p, q, r)
        f_p, f_r = _grads(f, (p, r), keep=True)
        f_pp, f_pq, f_pr = _grads(f_p, (p, q, r), keep=False)
        f_rq, f_rr = _grads(f_r, (q, r), keep=False)
    out = {"f": f, "p": f_p, "r": f_r, "pp": f_pp, "pq": f_pq, "pr": f_pr, "qr": f_rq, "rr": f_rr}
    return {k: v.detach() for k, v in out.items()}


def _outer(x: Tensor, y: Tensor) -> Tensor:
    """Outer products of the last axes: (..., d) x (..., d) -> (..., d, d)."""
    return x.unsqueeze(-1) * y.unsqueeze(-2)


def _d1_d1(part: dict[str, Tensor], w: Tensor, v: Tensor) -> Tensor:
    """d1 d1 K(w_i, v_j) for unit rows w (E, m, d) and v (E or 1, k, d): (E, m, k, d, d)."""
    wi, vj = w.unsqueeze(2), v.unsqueeze(1)
    eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
    s = lambda key: part[key][..., None, None]  # noqa: E731 - broadcast a pair scalar
    cross = _outer(wi, vj)
    return (
        2 * s("p") * eye
        + 4 * s("pp") * _outer(wi, wi)
        + 2 * s("pr") * (cross + cross.transpose(-1, -2))
        + s("rr") * _outer(vj, vj)
    )


def population_hessian(
    fn: PairFunction, w: Tensor, a: Tensor, teacher_w: Tensor, teacher_a: Tensor
) -> Tensor:
    """Exact Hessians (E, P, P) of 1/2 E|A sigma(W x) - A* sigma(W* x)|^2 for every member.

    ``w`` (E, m, d) and ``a`` (E, d_out, m) are the members' layers, ``teacher_w`` (k, d) and
    ``teacher_a`` (d_out, k) the teacher's; the parameter order is that of
    :class:`escapelab.nets.mlp.Architecture` (W row-major, then A row-major). See the module
    docstring for the formulas.
    """
    e, m, d = w.shape
    d_out = a.shape[1]
    tw, ta = teacher_w.unsqueeze(0), teacher_a.unsqueeze(0)
    norm_w, norm_t = (w * w).sum(-1), (tw * tw).sum(-1)
    ss = _partials(fn, norm_w.unsqueeze(2), norm_w.unsqueeze(1), w @ w.mT)
    st = _partials(fn, norm_w.unsqueeze(2), norm_t.unsqueeze(1), w @ tw.mT)
    aa = a.mT @ a  # (E, m, m): a_i . a_j
    at = a.mT @ ta  # (E, m, k): a_i . a*_t
    wi, wj = w.unsqueeze(2), w.unsqueeze(1)

    # w-w block: (a_i.a_j) d1 d2 K(w_i, w_j), plus the diagonal sums of d1 d1 K
    s = lambda key: ss[key][..., None, None]  # noqa: E731 - broadcast a pair scalar
    eye = torch.eye(d, dtype=w.dtype, device=w.device)
    mixed = (
        s("r") * eye
        + 4 * s("pq") * _outer(wi, wj)
        + 2 * s("pr") * _outer(wi, wi)
        + 2 * s("qr") * _outer(wj, wj)
        + s("rr") * _outer(wj, wi)
    )
    h_ww = aa[..., None, None] * mixed  # (E, m, m, d, d)
    diag = torch.einsum("eij,eijkl->eikl", aa, _d1_d1(ss, w, w))
    diag = diag - torch.einsum("eit,eitkl->eikl", at, _d1_d1(st, w, tw))
    idx = torch.arange(m, device=w.device)
    h_ww[:, idx, idx] += diag

    # a-w block: a_oj G_ji + [i = j] (sum_j' a_oj' G_ij' - sum_t a*_ot G*_it)
    g_ss = 2 * ss["p"].unsqueeze(-1) * wi + ss["r"].unsqueeze(-1) * wj  # (E, m, m, d)
    g_st = 2 * st["p"].unsqueeze(-1) * wi + st["r"].unsqueeze(-1) * tw.unsqueeze(1)
    h_aw = torch.einsum("eoj,ejid->eoijd", a, g_ss)
    own = torch.einsum("eoj,eijd->eoid", a, g_ss) - torch.einsum("ot,eitd->eoid", teacher_a, g_st)
    h_aw[:, :, idx, idx] += own

    n_w = m * d
    hess = w.new_zeros(e, n_w + d_out * m, n_w + d_out * m)
    hess[:, :n_w, :n_w] = h_ww.permute(0, 1, 3, 2, 4).reshape(e, n_w, n_w)
    block = h_aw.reshape(e, d_out * m, n_w)
    hess[:, n_w:, :n_w] = block
    hess[:, :n_w, n_w:] = block.mT
    k_ss = ss["f"]
    eye_out = torch.eye(d_out, dtype=w.dtype, device=w.device)
    hess[:, n_w:, n_w:] = torch.einsum("op,eij->eoipj", eye_out, k_ss).reshape(
        e, d_out * m, d_out * m
    )
    return hess
