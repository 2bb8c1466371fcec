"""Random features of Gaussian projections and the kernels they average to.

A random-feature model (Rahimi & Recht 2007) with k features maps an input x to
z(x) = g(W^T x) / sqrt(k), with W's columns w_j ~ N(0, I_d) drawn once and kept fixed; only a
linear read-out is trained. As k grows, z(x).z(x') tends to the kernel
K(x, x') = E_w[g(w.x) g(w.x')], known in closed form for the feature maps here:

``linear``  g(u) = u: K = x.x'.
``relu``    g(u) = max(u, 0): the first-order arc-cosine kernel (Cho & Saul 2009),
            K = |x||x'| (sin t + (pi - t) cos t) / (2 pi), t the angle between x and x'.
``erf``     g(u) = erf(u / sqrt 2) (escapelab's erf, :mod:`escapelab.nets.activations`):
            K = (2/pi) arcsin(x.x' / sqrt((1 + |x|^2)(1 + |x'|^2))) (Williams 1997).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from escapelab.config import SpecError
from escapelab.nets.activations import get_activation

FEATURE_MAPS: tuple[str, ...] = ("linear", "relu", "erf")


def check_feature_map(name: str) -> str:
    """``name`` if it is one of :data:`FEATURE_MAPS`; SpecError naming the allowed ones."""
    if name not in FEATURE_MAPS:
        raise SpecError(
            "feature_map", f"unknown feature map {name!r}; allowed: {', '.join(FEATURE_MAPS)}"
        )
    return name


def random_features(x: Tensor, w: Tensor, name: str) -> Tensor:
    """Features g(x W) / sqrt(k) of inputs x (..., N, d) for projections w (..., d, k)."""
    check_feature_map(name)
    pre = x @ w
    if name == "relu":
        pre = torch.relu(pre)
    elif name == "erf":
        pre = get_activation("erf").fn(pre)
    return pre / math.sqrt(w.shape[-1])


def feature_kernel(x1: Tensor, x2: Tensor, name: str) -> Tensor:
    """The infinite-feature kernel K(x1_a, x2_b) (N1, N2) of feature map ``name``."""
    check_feature_map(name)
    dot = x1 @ x2.T
    if name == "linear":
        return dot
    sq1, sq2 = (x1 * x1).sum(1), (x2 * x2).sum(1)
    if name == "relu":
        norms = torch.sqrt(sq1[:, None] * sq2[None, :])
        cos = (dot / norms.clamp_min(torch.finfo(dot.dtype).tiny)).clamp(-1.0, 1.0)
        theta = torch.arccos(cos)
        return norms * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)
    scale = torch.sqrt((1 + sq1)[:, None] * (1 + sq2)[None, :])
    return (2 / math.pi) * torch.arcsin((dot / scale).clamp(-1.0, 1.0))


__all__ = ["FEATURE_MAPS", "check_feature_map", "feature_kernel", "random_features"]
