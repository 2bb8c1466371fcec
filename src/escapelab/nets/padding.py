"""Narrow networks as masked members of a wider one: several widths trained as one ensemble.

A width-n MLP (or a CNN with n channels) is exactly a width-N network (N >= n) whose parameters
are zero outside the leading block of every tensor and held there by a mask: the extra hidden
units receive zero input weights and bias (so output relu(0) = 0, or feed zeros to the next
layer) and have zero outgoing weights. The leading block of each tensor is the right one for
:class:`~escapelab.nets.classifiers.MLP` (weights (out, in)) and for
:class:`~escapelab.nets.classifiers.CNN1D`, whose read-out flattens channel-major, so the first
n channels are the first n * L entries. Masked training
(:func:`escapelab.optim.minibatch.fit`) keeps the padding at zero, so each member follows the
narrow network's trajectory (up to the order of floating-point sums).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def embed_leading(
    members: Sequence[Mapping[str, Tensor]], shapes: Mapping[str, torch.Size]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Stacked parameters (E, *shape) and boolean masks for ``members`` (dicts of one network's
    tensors, possibly narrower), each placed in the leading block of the wide ``shapes``."""
    params, masks = {}, {}
    for name, shape in shapes.items():
        first = members[0][name]
        p = torch.zeros(len(members), *shape, dtype=first.dtype, device=first.device)
        m = torch.zeros(len(members), *shape, dtype=torch.bool, device=first.device)
        for i, member in enumerate(members):
            t = member[name]
            if t.dim() != len(shape) or any(a > b for a, b in zip(t.shape, shape, strict=True)):
                raise ValueError(f"{name!r} of shape {tuple(t.shape)} does not fit in {shape}")
            block = (i, *(slice(0, s) for s in t.shape))
            p[block] = t
            m[block] = True
        params[name], masks[name] = p, m
    return params, masks


__all__ = ["embed_leading"]
