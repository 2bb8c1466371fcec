"""Exact Hessians of the half-MSE loss of one-hidden-layer networks, in closed form.

For f_o(x) = sum_j a_oj sigma(z_j) + c_o with z_j = w_j . x + b_j, xt = (x, 1) (the 1 only with
biases), r = f - y and L = 1/(2N) sum_n sum_o r_no^2, the Hessian blocks are sums over samples:

    d2L / d(w_j,b_j) d(w_k,b_k) = 1/N sum_n [u_j u_k (a_j . a_k) + delta_jk u'_j (r . a_j)] xt xt^T
    d2L / d(w_j,b_j) d a_ok     = 1/N sum_n u_j (a_oj h_k + delta_jk r_o) xt
    d2L / d a_oj d a_o'k        = delta_oo' 1/N sum_n h_j h_k
    d2L / d(w_j,b_j) d c_o      = 1/N sum_n a_oj u_j xt,   d2L / d a_oj d c_o' = delta_oo' mean h_j,
    d2L / d c_o d c_o'          = delta_oo'

with h = sigma(z), u = sigma'(z), u' = sigma''(z) (Gauss-Newton part plus the residual part). The
dominant unit-unit blocks are one GEMM of per-member pair weights (E * m(m+1)/2, N) against the
shared outer products xt xt^T (N, d~^2): no per-sample Jacobian is ever materialised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture


def _structured_to_theta(arch: Architecture) -> Tensor:
    """Index map: position in theta -> position in the unit-major order [(w_j, b_j)_j, a, c]."""
    d, m, out = arch.d_in, arch.widths[0], arch.d_out
    dt = d + int(arch.bias)
    idx = [j * dt + i for j in range(m) for i in range(d)]
    if arch.bias:
        idx += [j * dt + d for j in range(m)]
    idx += [m * dt + k for k in range(out * m)]
    if arch.output_bias:
        idx += [m * dt + out * m + o for o in range(out)]
    return torch.tensor(idx)


def shallow_hessian(arch: Architecture, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Exact Hessians (E, P, P) of the half-MSE loss of one-hidden-layer members on (x, y)."""
    if len(arch.widths) != 1:
        raise ValueError("shallow_hessian needs exactly one hidden layer")
    act, n, m, out = arch.act, x.shape[0], arch.widths[0], arch.d_out
    e, n_params = theta.shape
    first, last = arch.unflatten(theta)
    xt = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], 1) if arch.bias else x
    dt = xt.shape[1]
    z = torch.einsum("nd,ejd->enj", x, first.weight)
    if first.bias is not None:
        z = z + first.bias.unsqueeze(1)
    h, u, u2 = act.fn(z), act.d1(z), act.d2(z)  # (E, N, m)
    a = last.weight  # (E, out, m)
    r = torch.einsum("enj,eoj->eno", h, a) - y.unsqueeze(0)
    if last.bias is not None:
        r = r + last.bias.unsqueeze(1)

    hs = torch.zeros(e, n_params, n_params, dtype=x.dtype, device=x.device)
    # unit-unit blocks: pair weights (j <= k) against the shared outer products xt xt^T
    jj, kk = torch.triu_indices(m, m, device=x.device)
    aa = torch.einsum("eoj,eok->ejk", a, a)[:, jj, kk]  # (E, pairs)
    pair_w = u[:, :, jj] * u[:, :, kk] * aa.unsqueeze(1)  # (E, N, pairs)
    diag = jj == kk
    pair_w[:, :, diag] += u2 * torch.einsum("eno,eoj->enj", r, a)
    outer = (xt.unsqueeze(2) * xt.unsqueeze(1)).reshape(n, dt * dt)
    blocks = torch.matmul(outer.t(), pair_w).transpose(1, 2).reshape(e, -1, dt, dt)
    ar = torch.arange(dt, device=x.device)
    rows = (jj * dt).view(-1, 1, 1) + ar.view(1, -1, 1)
    cols = (kk * dt).view(-1, 1, 1) + ar.view(1, 1, -1)
    hs[:, rows, cols] = blocks
    hs[:, cols, rows] = blocks.transpose(-1, -2)
    # unit-output blocks: a_oj sum_n u_j h_k xt + delta_jk sum_n u_j r_o xt
    uh = (u.unsqueeze(3) * h.unsqueeze(2)).view(e, n, m * m)
    uhx = torch.matmul(xt.t(), uh).view(e, dt, m, m)  # (E, d~, m_j, m_k)
    wa = a.permute(0, 2, 1).view(e, 1, m, out, 1) * uhx.unsqueeze(3)  # (E, d~, m_j, out, m_k)
    urx = torch.einsum("enj,eno,ni->eijo", u, r, xt)  # (E, d~, m_j, out)
    idx = torch.arange(m, device=x.device)
    wa[:, :, idx, :, idx] += urx.permute(2, 0, 1, 3)
    wa = wa.permute(0, 2, 3, 4, 1).reshape(e, m, out * m, dt)
    w_rows = (idx * dt).view(m, 1, 1) + ar.view(1, 1, dt)
    a_cols = (m * dt + torch.arange(out * m, device=x.device)).view(1, -1, 1)
    hs[:, w_rows, a_cols] = wa
    hs[:, a_cols, w_rows] = wa
    hh = torch.einsum("enj,enk->ejk", h, h)
    for o in range(out):
        sl = slice(m * dt + o * m, m * dt + (o + 1) * m)
        hs[:, sl, sl] = hh
    if last.bias is not None:
        c0 = m * dt + out * m
        wc = torch.einsum("eoj,enj,ni->ejoi", a, u, xt)  # (E, m, out, d~)
        c_cols = (c0 + torch.arange(out, device=x.device)).view(1, out, 1)
        hs[:, w_rows, c_cols] = wc
        hs[:, c_cols, w_rows] = wc
        h_sum = h.sum(1)  # (E, m)
        for o in range(out):
            sl = slice(m * dt + o * m, m * dt + (o + 1) * m)
            hs[:, sl, c0 + o] = h_sum
            hs[:, c0 + o, sl] = h_sum
            hs[:, c0 + o, c0 + o] = n
    perm = _structured_to_theta(arch).to(x.device)
    hs = hs[:, perm][:, :, perm]
    return (hs + hs.transpose(1, 2)) / (2 * n)
