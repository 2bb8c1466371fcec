"""Many independent copies of one ``torch.nn.Module`` trained as a single batched computation.

:class:`StackedModel` holds the structure of a module built by a factory and runs any number of
parameter sets through it at once with ``torch.func.vmap`` over ``functional_call``: parameters
are plain tensors with a leading member axis (E, ...), named as in ``module.named_parameters()``.
Member i initialized with seed s is exactly the module ``factory()`` builds after
``torch.manual_seed(s)``, so an ensemble and a seed-by-seed loop start from identical weights.

Modules with buffers (BatchNorm running statistics) are refused: their in-place updates have no
batched meaning here. A module may provide its own batched forward, ``stacked_forward(params,
x)`` on (E, B, ...) inputs (the MLP of :mod:`escapelab.nets.classifiers` does, with one
``baddbmm`` per layer); it is then used instead of the vmapped ``forward``. It may also provide
``stacked_vjp(params, x)``, the outputs and a hand-written pullback (the MLP does); otherwise
:meth:`StackedModel.vjp` backpropagates with autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap


class StackedModel:
    """The structure of ``factory()``; parameter sets are dicts of (E, ...) tensors."""

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        probe = factory()
        buffers = [name for name, _ in probe.named_buffers()]
        if buffers:
            raise ValueError(
                "StackedModel needs a module without buffers (no BatchNorm running statistics); "
                f"this one has {', '.join(buffers[:5])}"
            )
        self.factory = factory
        self.device = torch.device(device)
        self.dtype = dtype
        self.shapes = {name: p.shape for name, p in probe.named_parameters()}
        self._structure = probe.to("meta")
        self._stacked = getattr(probe, "stacked_forward", None)
        self._stacked_vjp = getattr(probe, "stacked_vjp", None)
        self._call = vmap(self._member_forward, in_dims=(0, 0))
        self._call_shared = vmap(self._member_forward, in_dims=(0, None))

    def _member_forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self._structure, params, (x,))

    def init(self, seeds: Sequence[int]) -> dict[str, Tensor]:
        """Stacked initial parameters: member i is what ``factory()`` builds after
        ``torch.manual_seed(seeds[i])`` (the global RNG state is restored afterwards)."""
        if not seeds:
            raise ValueError("init needs at least one seed")
        members = []
        with torch.random.fork_rng(devices=[]):
            for seed in seeds:
                torch.manual_seed(int(seed))
                members.append(dict(self.factory().named_parameters()))
        return {
            name: torch.stack([m[name].detach() for m in members]).to(self.device, self.dtype)
            for name in self.shapes
        }

    def check(self, params: Mapping[str, Tensor]) -> int:
        """The number of members; ValueError naming any missing, unknown or misshapen tensor."""
        missing = [n for n in self.shapes if n not in params]
        unknown = [n for n in params if n not in self.shapes]
        if missing or unknown:
            raise ValueError(
                f"parameters do not match the model: missing {missing}, unknown {unknown}; "
                f"expected {list(self.shapes)}"
            )
        sizes = {p.shape[0] for p in params.values()}
        for name, p in params.items():
            if p.shape[1:] != self.shapes[name]:
                raise ValueError(
                    f"{name!r} has member shape {tuple(p.shape[1:])}, "
                    f"the model's is {tuple(self.shapes[name])}"
                )
        if len(sizes) != 1:
            raise ValueError(f"parameters disagree on the number of members: {sorted(sizes)}")
        return sizes.pop()

    def forward(self, params: Mapping[str, Tensor], x: Tensor, shared: bool = False) -> Tensor:
        """Outputs (E, B, ...) of every member; ``x`` is (E, B, ...) per member, or (B, ...)
        fed to all members when ``shared``. A module with a ``stacked_forward(params, x)``
        method (x: (E, B, ...)) computes this itself; any other is vmapped."""
        if self._stacked is not None:
            if shared:
                x = x.expand(next(iter(params.values())).shape[0], *x.shape)
            return self._stacked(params, x)
        return (self._call_shared if shared else self._call)(dict(params), x)

    def vjp(
        self, params: Mapping[str, Tensor], x: Tensor
    ) -> tuple[Tensor, Callable[[Tensor, Mapping[str, Tensor]], None]]:
        """Outputs (E, B, ...) of every member on its own inputs ``x`` (E, B, ...), and the
        pullback: ``pullback(grad_outputs, grads)`` overwrites ``grads[name]`` (one tensor of
        each parameter's shape) with the gradient of sum(grad_outputs * outputs). Uses the
        module's ``stacked_vjp`` where it has one, else autograd (run even under no_grad)."""
        if self._stacked_vjp is not None:
            return self._stacked_vjp(params, x)
        with torch.enable_grad():
            leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
            outputs = self.forward(leaves, x)

        def pullback(grad_outputs: Tensor, grads: Mapping[str, Tensor]) -> None:
            computed = torch.autograd.grad(
                outputs, list(leaves.values()), grad_outputs, materialize_grads=True
            )
            for name, grad in zip(leaves, computed, strict=True):
                grads[name].copy_(grad)

        return outputs.detach(), pullback

    def member(self, params: Mapping[str, Tensor], index: int) -> nn.Module:
        """Member ``index`` as a standalone module (a copy), e.g. for the curvature tools."""
        module = self.factory().to(self.device, self.dtype)
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(params[name][index])
        return module

    @staticmethod
    def select(params: Mapping[str, Tensor], rows: Tensor | Sequence[int]) -> dict[str, Tensor]:
        """The members ``rows`` of a parameter set (copies)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        return {n: p[index.to(p.device)].clone() for n, p in params.items()}
