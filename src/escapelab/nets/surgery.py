"""Unit-level surgery on one-hidden-layer networks: sub-networks and embeddings into wider ones.

* :func:`select_units` keeps a subset of hidden units with their incoming and outgoing weights — a
  neuron-level "ticket" of the lottery picture.
* :func:`split_unit` is the neuron splitting of Fukumizu & Amari (2000): unit j is duplicated and
  its outgoing weight a_j shared as gamma * a_j and (1 - gamma) * a_j. The function is unchanged for
  every gamma, and a critical point stays critical.
* :func:`add_unit` appends a unit with zero outgoing weight: the function is unchanged, but the new
  outgoing weight generally feels a gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture, Layer


def _check_shallow(arch: Architecture) -> None:
    if len(arch.widths) != 1:
        raise ValueError("unit surgery is implemented for one hidden layer")


def with_width(arch: Architecture, width: int) -> Architecture:
    """The same architecture with ``width`` hidden units."""
    return Architecture(
        arch.d_in, (width,), arch.d_out, arch.activation, arch.bias, arch.output_bias
    )


def select_units(
    arch: Architecture, theta: Tensor, units: Sequence[int]
) -> tuple[Architecture, Tensor]:
    """The sub-network of ``units`` (theta (..., P) -> (..., P_sub)) and its architecture."""
    _check_shallow(arch)
    idx = torch.as_tensor(list(units), dtype=torch.long, device=theta.device)
    first, last = arch.unflatten(theta)
    sub = with_width(arch, len(idx))
    layers = [
        Layer(first.weight[..., idx, :], None if first.bias is None else first.bias[..., idx]),
        Layer(last.weight[..., idx], last.bias),
    ]
    return sub, sub.flatten(layers)


def split_unit(
    arch: Architecture, theta: Tensor, unit: int, gamma: float
) -> tuple[Architecture, Tensor]:
    """Duplicate ``unit`` as a new last unit; outgoing weights gamma * a and (1 - gamma) * a."""
    _check_shallow(arch)
    first, last = arch.unflatten(theta)
    wide = with_width(arch, arch.widths[0] + 1)
    a = last.weight.clone()
    a_new = (1.0 - gamma) * a[..., unit : unit + 1]
    a[..., unit] *= gamma
    layers = [
        Layer(
            torch.cat([first.weight, first.weight[..., unit : unit + 1, :]], -2),
            None
            if first.bias is None
            else torch.cat([first.bias, first.bias[..., unit : unit + 1]], -1),
        ),
        Layer(torch.cat([a, a_new], -1), last.bias),
    ]
    return wide, wide.flatten(layers)


def add_unit(
    arch: Architecture, theta: Tensor, weight: Tensor, bias: float | Tensor = 0.0
) -> tuple[Architecture, Tensor]:
    """Append a unit with incoming ``weight`` (d,), ``bias`` and zero outgoing weights."""
    _check_shallow(arch)
    first, last = arch.unflatten(theta)
    wide = with_width(arch, arch.widths[0] + 1)
    lead = theta.shape[:-1]
    w_new = weight.to(theta).expand(*lead, 1, arch.d_in)
    b_layer = None
    if first.bias is not None:
        b_new = torch.as_tensor(bias, dtype=theta.dtype, device=theta.device).expand(*lead, 1)
        b_layer = torch.cat([first.bias, b_new], -1)
    zeros = torch.zeros(*lead, arch.d_out, 1, dtype=theta.dtype, device=theta.device)
    layers = [
        Layer(torch.cat([first.weight, w_new], -2), b_layer),
        Layer(torch.cat([last.weight, zeros], -1), last.bias),
    ]
    return wide, wide.flatten(layers)
