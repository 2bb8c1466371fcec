"""Channels to infinity: their geometry at an endpoint, and a certificate that one goes on.

Martinelli et al. (2023) describe the flat channels of a network's loss: two units whose
incoming weights merge while their outgoing weights grow large with opposite signs tend to the
*derivative unit* a sigma'(w.x) x, which no finite weights represent; the loss keeps falling
toward the channel's limit while the parameter norm grows without bound and the gradient
vanishes. For an odd activation without biases the same happens at w = 0: one unit with
vanishing incoming and growing outgoing weights tends to a linear unit.

Two things are measured here:

* the **geometry** (:func:`find_channels`): which pairs (or single units) of a network look
  like such a channel now — nearly parallel incoming weights (cosine above ``1 - cos_tol``)
  with large outgoing weights of opposite sign, or a linearizing unit;
* the **continuation** (:func:`channel_drop`): the network moved further along each channel,
  the pair's sum of outgoing weights and midpoint of incoming weights kept, the difference of
  outgoing weights multiplied by t and that of the incoming weights divided by t (for a
  linearizing unit: w / t, t a). The derivative-unit term a_diff * w_diff stays, the
  second-order remainder shrinks as 1 / t^2, so the function tends to the channel's limit.
  If the loss never rises along t = 1.1, 2, 4, 8 and falls by more than rounding, the endpoint
  lies on a path to infinity on which the loss only decreases: it is on a channel, not at a
  minimum, whatever its gradient norm (far along a channel the gradient falls below any
  tolerance). On a line of critical points made by splitting a unit (the incoming weights
  equal, so nothing changes with t) the loss stays the same and the test says no; at a
  minimum it rises.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from escapelab.nets.activations import ACTIVATIONS
from escapelab.nets.mlp import Architecture, Layer
from escapelab.problems.objective import Objective

CONTINUATION = (1.1, 2.0, 4.0, 8.0)  # the factors t of :func:`channel_drop`
ROUNDING = 64  # losses within this many ulps of (|loss| + loss_scale) are equal


@dataclass(frozen=True)
class Channel:
    """One channel's units: hidden layer ``layer``, units ``i`` and ``j`` (None: a linearizing
    unit ``i``); ``flip``: unit j enters as (-w_j, -a_j), the same unit for an odd activation,
    so an antiparallel pair with outgoing weights of one sign is handled as a parallel one."""

    layer: int
    i: int
    j: int | None = None
    flip: bool = False


def _incoming(layer: Layer) -> Tensor:
    """A hidden layer's incoming weights with the bias as the last column."""
    if layer.bias is None:
        return layer.weight
    return torch.cat([layer.weight, layer.bias.unsqueeze(-1)], dim=-1)


def _odd(arch: Architecture) -> bool:
    return ACTIVATIONS[arch.activation].odd and not arch.bias


def find_channels(
    arch: Architecture, theta: Tensor, cos_tol: float, out_min: float
) -> list[Channel]:
    """The channel-shaped pairs and linearizing units of one member ``theta`` (P,).

    A pair: two units of one hidden layer with incoming weights (and bias) at cosine above
    ``1 - cos_tol`` whose outgoing weight vectors point in opposite directions, both with norm
    above ``out_min`` (odd activation, no bias: also antiparallel incoming weights with
    outgoing weights of one direction). A linearizing unit (one hidden layer, odd activation
    with sigma'(0) != 0, no bias): outgoing norm above ``out_min``, incoming norm below
    ``cos_tol`` times it."""
    layers = arch.unflatten(theta)
    odd = _odd(arch)
    found: list[Channel] = []
    for k, (layer, nxt) in enumerate(itertools.pairwise(layers)):
        incoming = _incoming(layer)
        unit = incoming / incoming.norm(dim=1, keepdim=True).clamp_min(1e-300)
        cos = unit @ unit.t()
        out = nxt.weight.t()  # (units, fan_out of the next layer)
        alignment = out @ out.t()
        big = out.norm(dim=1) > out_min
        both_big = (big.unsqueeze(0) & big.unsqueeze(1)).triu(diagonal=1)
        parallel = both_big & (cos > 1.0 - cos_tol) & (alignment < 0)
        found += [Channel(k, i, j) for i, j in parallel.nonzero().tolist()]
        if odd:
            anti = both_big & (cos < cos_tol - 1.0) & (alignment > 0)
            found += [Channel(k, i, j, flip=True) for i, j in anti.nonzero().tolist()]
    if len(layers) == 2 and odd and arch.activation != "linear":
        w_norm = layers[0].weight.norm(dim=1)
        a_norm = layers[1].weight.norm(dim=0)
        linear = (a_norm > out_min) & (w_norm < cos_tol * a_norm)
        found += [Channel(0, i) for i in linear.nonzero().squeeze(1).tolist()]
    return found


def merging_pair(arch: Architecture, theta: Tensor, cos_tol: float, out_min: float) -> bool:
    """True if ``theta`` has a channel-shaped pair of units (:func:`find_channels`)."""
    return any(c.j is not None for c in find_channels(arch, theta, cos_tol, out_min))


def linearizing_unit(arch: Architecture, theta: Tensor, ratio: float, out_min: float) -> bool:
    """True if ``theta`` has a linearizing unit (:func:`find_channels`): a sigma(w.x) with
    w -> 0, |a| -> infinity and a w^T held tends to the linear unit sigma'(0) a w^T x. A student
    narrower than its teacher uses it to add a linear term to its fit."""
    return any(c.j is None for c in find_channels(arch, theta, ratio, out_min))


def continue_channel(arch: Architecture, theta: Tensor, channel: Channel, t: Tensor) -> Tensor:
    """``theta`` (P,) moved along ``channel`` by each factor in ``t`` (T,): (T, P); see the
    module docstring (t = 1 returns theta)."""
    out = theta.unsqueeze(0).repeat(len(t), 1)
    layers = arch.unflatten(out)
    first, nxt = layers[channel.layer], layers[channel.layer + 1]
    tt = t.to(theta).unsqueeze(1)
    if channel.j is None:
        first.weight[:, channel.i] /= tt
        nxt.weight[:, :, channel.i] *= tt
        return out
    sign = -1.0 if channel.flip else 1.0
    params = [(first.weight, 1), (nxt.weight, 2)] + (
        [(first.bias, 1)] if first.bias is not None else []
    )
    for tensor, axis in params:
        a = tensor.select(axis, channel.i)
        b = tensor.select(axis, channel.j)
        mean, half = (a + sign * b) / 2, (a - sign * b) / 2
        scale = tt if axis == 2 else 1 / tt  # outgoing difference x t, incoming difference / t
        scale = scale if a.dim() == 2 else scale.squeeze(1)
        a.copy_(mean + half * scale)
        b.copy_(sign * (mean - half * scale))
    return out


def channel_drop(
    objective: Objective, theta: Tensor, channels: list[Channel], free: Tensor | None = None
) -> float:
    """The largest loss decrease L(theta) - L(t = 8) over the ``channels`` along which the loss
    never rises (t = 1.1, 2, 4, 8, each within rounding), counting only decreases beyond
    rounding; 0.0 when no channel qualifies (see the module docstring). With ``free`` (P,)
    bool, a channel whose continuation would move a held coordinate does not qualify."""
    t = torch.tensor(CONTINUATION, dtype=theta.dtype)
    moved = [continue_channel(objective.arch, theta, c, t) for c in channels]
    if free is not None:
        held = ~free.to(torch.bool)
        moved = [m for m in moved if bool((m[:, held] == theta[held]).all())]
    if not moved:
        return 0.0
    points = torch.cat([theta.unsqueeze(0), *moved])
    losses = objective.loss(points).to(torch.float64)
    base, along = losses[0], losses[1:].reshape(len(moved), len(t))
    tol = ROUNDING * torch.finfo(torch.float64).eps * (base.abs() + objective.loss_scale)
    never_rises = (along <= base + tol).all(dim=1) & torch.isfinite(along).all(dim=1)
    drop = torch.where(never_rises, base - along[:, -1], torch.zeros_like(base))
    best = float(drop.max())
    return best if best > float(tol) else 0.0
