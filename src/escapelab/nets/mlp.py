"""Ensembles of fully connected networks whose parameters are stacked along a leading axis E.

An ensemble is an :class:`Architecture` plus a parameter matrix ``theta`` of shape (E, P): row e is
member e, flattened layer by layer as ``W_1, b_1, W_2, b_2, ..., W_out, b_out`` (biases only where
enabled; ``W_l`` has shape (fan_out, fan_in), row-major). A single network is E = 1, and every
function here also accepts a single flat vector of shape (P,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from escapelab.nets.activations import Activation, get_activation
from escapelab.seeding import derive_seed

InitScheme = Literal["glorot", "he", "normal"]
INIT_SCHEMES: tuple[str, ...] = ("glorot", "he", "normal")


@dataclass(frozen=True)
class Layer:
    """Views of one layer's parameters: weight (..., fan_out, fan_in), bias (..., fan_out)."""

    weight: Tensor
    bias: Tensor | None


@dataclass(frozen=True)
class Architecture:
    """A fully connected network: d_in inputs, hidden ``widths``, d_out outputs.

    ``bias`` switches the hidden-layer biases, ``output_bias`` the (linear) output layer's.
    """

    d_in: int
    widths: tuple[int, ...]
    d_out: int = 1
    activation: str = "tanh"
    bias: bool = True
    output_bias: bool = False

    def __post_init__(self) -> None:
        if self.d_in < 1 or self.d_out < 1:
            raise ValueError("d_in and d_out must be >= 1")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be a non-empty list of positive ints, got {self.widths}")
        get_activation(self.activation)
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def act(self) -> Activation:
        return get_activation(self.activation)

    @property
    def layer_dims(self) -> list[tuple[int, int, bool]]:
        """(fan_in, fan_out, has_bias) for every layer, the output layer last."""
        dims = [self.d_in, *self.widths, self.d_out]
        n = len(dims) - 1
        return [
            (dims[i], dims[i + 1], self.output_bias if i == n - 1 else self.bias) for i in range(n)
        ]

    @property
    def n_params(self) -> int:
        return sum(i * o + (o if b else 0) for i, o, b in self.layer_dims)

    def unflatten(self, theta: Tensor) -> list[Layer]:
        """Split ``theta`` (..., P) into per-layer views (no copies; writes go through)."""
        if theta.shape[-1] != self.n_params:
            raise ValueError(
                f"theta has {theta.shape[-1]} parameters, architecture needs {self.n_params}"
            )
        lead = theta.shape[:-1]
        layers, k = [], 0
        for fan_in, fan_out, has_bias in self.layer_dims:
            w = theta[..., k : k + fan_in * fan_out].reshape(*lead, fan_out, fan_in)
            k += fan_in * fan_out
            b = None
            if has_bias:
                b = theta[..., k : k + fan_out]
                k += fan_out
            layers.append(Layer(w, b))
        return layers

    def flatten(self, layers: list[Layer]) -> Tensor:
        """Inverse of :meth:`unflatten`: concatenate per-layer tensors into (..., P)."""
        parts = []
        for layer in layers:
            lead = layer.weight.shape[:-2]
            parts.append(layer.weight.reshape(*lead, -1))
            if layer.bias is not None:
                parts.append(layer.bias)
        return torch.cat(parts, dim=-1)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """Outputs on shared inputs x (N, d_in): (E, N, d_out), or (N, d_out) for theta (P,)."""
        act = self.act
        layers = self.unflatten(theta)
        h = x
        for i, layer in enumerate(layers):
            z = h @ layer.weight.transpose(-1, -2)
            if layer.bias is not None:
                z = z + layer.bias.unsqueeze(-2)
            h = z if i == len(layers) - 1 else act.fn(z)
        return h

    def init(
        self,
        n_members: int,
        seed: int,
        scheme: InitScheme = "glorot",
        scale: float = 1.0,
        first_member: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Initial parameters (E, P) in which member i depends only on (seed, first_member + i).

        glorot: N(0, 2/(fan_in+fan_out)) weights; he: N(0, 2/fan_in); normal: N(0, scale^2) for
        weights and biases. glorot and he multiply their std by ``scale`` and start biases at zero.
        Draws happen on the CPU in float64, so a member is the same on every device and precision.
        """
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"unknown init scheme {scheme!r}; allowed: {', '.join(INIT_SCHEMES)}")
        rows = []
        for i in range(first_member, first_member + n_members):
            gen = torch.Generator().manual_seed(derive_seed("init", seed, i))
            parts = []
            for fan_in, fan_out, has_bias in self.layer_dims:
                if scheme == "glorot":
                    std = scale * math.sqrt(2.0 / (fan_in + fan_out))
                elif scheme == "he":
                    std = scale * math.sqrt(2.0 / fan_in)
                else:
                    std = scale
                parts.append(
                    std * torch.randn(fan_in * fan_out, generator=gen, dtype=torch.float64)
                )
                if has_bias:
                    if scheme == "normal":
                        parts.append(
                            scale * torch.randn(fan_out, generator=gen, dtype=torch.float64)
                        )
                    else:
                        parts.append(torch.zeros(fan_out, dtype=torch.float64))
            rows.append(torch.cat(parts))
        return torch.stack(rows).to(dtype=dtype, device=device)
