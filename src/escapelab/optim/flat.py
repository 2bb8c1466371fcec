"""All members' parameters, gradients, masks and optimizer state in flat buffers.

A small ensemble's mini-batch step costs dispatch, not arithmetic (issue 15: IMP with one seed
spent ~1 ms per step in ~211 ATen calls of ~4 µs, and on a busy machine every call that enters
a parallel region waits for a time slice). Many of those calls repeated one element-wise
operation per parameter tensor: zero the gradient, mask it, update the weight and the two Adam
moments, mask the weight again. :class:`FlatParameters` stores every (E, ...) parameter as a
view of one contiguous buffer and its gradient as a view of a second one, so that tail of the
step is a few single operations over the whole buffer: one multiplication by the 0/1 mask (the
masked tensors come first, so the mask covers a prefix of the buffer) and one fused Adam or SGD
update (``torch.optim`` over the one flat tensor: the same element-wise update as one optimizer
per tensor, now one kernel).

Masked weights need no second multiplication after the update: their gradient is zero from the
first step, so Adam's moments there stay exactly zero and its update is 0 / (0 + eps) = 0, and
SGD's (momentum buffer, weight decay) is zero as well; they stay exactly 0.0 (a diverged
network's NaN gradient is masked to NaN either way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor


class FlatParameters:
    """``tensors`` (name -> (E, ...)) copied into one buffer, ``data``; ``keep`` (name -> bool
    mask of a tensor's shape, for some of them) copied into a 0/1 buffer over the masked prefix.

    ``views[name]`` and ``grads[name]`` are views of ``data`` and of the gradient buffer
    ``grad`` in the given order and shapes; masked entries start at exactly zero."""

    def __init__(self, tensors: Mapping[str, Tensor], keep: Mapping[str, Tensor]) -> None:
        bad = [n for n in keep if n not in tensors or keep[n].shape != tensors[n].shape]
        if bad:
            raise ValueError(f"mask {bad[0]!r} does not fit a parameter of the model")
        first = next(iter(tensors.values()))
        order = [n for n in tensors if n in keep] + [n for n in tensors if n not in keep]
        self.masked = sum(tensors[n].numel() for n in keep)
        self.data = torch.empty(
            sum(t.numel() for t in tensors.values()), dtype=first.dtype, device=first.device
        )
        self.grad = torch.zeros_like(self.data)
        self.keep = torch.empty(self.masked, dtype=first.dtype, device=first.device)
        slices: dict[str, slice] = {}
        offset = 0
        for name in order:
            slices[name] = slice(offset, offset + tensors[name].numel())
            offset += tensors[name].numel()
        self.views: dict[str, Tensor] = {}
        self.grads: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, tensor in tensors.items():
                view = self.data[slices[name]].view(tensor.shape)
                view.copy_(tensor)
                if name in keep:
                    self.keep[slices[name]].view(tensor.shape).copy_(keep[name])
                    view.masked_fill_(~keep[name].bool(), 0)
                self.views[name] = view
                self.grads[name] = self.grad[slices[name]].view(tensor.shape)
        self.data.grad = self.grad

    def mask_grad(self) -> None:
        """Zero the gradients of masked entries (one multiplication)."""
        if self.masked:
            self.grad[: self.masked].mul_(self.keep)

    def optimizer(
        self,
        kind: Literal["adam", "sgd"],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> torch.optim.Optimizer:
        """Adam or SGD over the flat buffer: the fused kernel where this torch has one for the
        device, else the for-each one (the same element-wise update either way)."""
        if kind == "adam":
            make, options = torch.optim.Adam, {"weight_decay": weight_decay}
        else:
            make = torch.optim.SGD
            options = {"momentum": momentum, "weight_decay": weight_decay}
        try:
            return make([self.data], lr=lr, fused=True, **options)
        except (RuntimeError, TypeError):
            return make([self.data], lr=lr, foreach=True, **options)
