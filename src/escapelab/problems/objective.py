"""Losses of whole ensembles: value, gradient and exact Hessian of every member at once.

An :class:`Objective` maps parameters theta (E, P) to per-member losses (E,). The trainer needs
``loss`` and ``loss_and_grad``; the classifier needs ``hessian``. Two kinds exist:

* :class:`DataObjective` — half mean squared error on a finite sample shared by all members. Its
  gradient is a hand-written backward pass (no autograd graph). One-hidden-layer networks on the
  CPU use the fused C kernel of :mod:`escapelab.problems.shallow_kernel` (forward, residual
  and backward in one pass over cache-sized sample blocks, parallel over members and blocks);
  everything else (deeper nets, GPUs, machines without a C compiler) the torch path, organised
  around one GEMM over the shared inputs for the first layer of all members, the activation and
  its slope computed together, and samples processed in cache-sized chunks. Both are checked against
  autograd in the tests.
* :class:`~escapelab.problems.population.PopulationObjective` — the exact Gaussian-input population
  loss of one-hidden-layer erf, relu, linear, tanh, sigmoid and softplus networks (closed-form or
  quadrature kernels), differentiated by autograd (it has no sample axis).

Exact Hessians use ``torch.func`` (forward-over-reverse) vectorised over members, in member chunks
so that memory stays bounded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor

from escapelab.nets.mlp import Architecture, Layer
from escapelab.problems import shallow_kernel
from escapelab.problems.shallow_hessian import shallow_hessian

KERNELS = ("auto", "fused", "torch")


class Objective(ABC):
    """Base class: subclasses define ``member_loss`` and may override the batched methods."""

    arch: Architecture
    loss_scale: float = 0.0
    """Size of the terms the loss is summed from, beyond the loss itself: its rounding error is
    about eps * (|loss| + loss_scale). Zero for a mean of squares (no cancellation); the
    population loss subtracts O(1) kernel terms, so near zero loss its rounding floor is set by
    them, not by the loss."""

    @abstractmethod
    def member_loss(self, theta: Tensor) -> Tensor:
        """Loss of one network with flat parameters theta (P,), as differentiable torch ops."""

    @abstractmethod
    def to(self, dtype: torch.dtype) -> Objective:
        """The same objective with its data in ``dtype`` (the trainer refines in float64)."""

    def loss(self, theta: Tensor) -> Tensor:
        """Per-member losses (E,)."""
        with torch.no_grad():
            return torch.vmap(self.member_loss)(theta)

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Per-member losses (E,) and gradients (E, P)."""
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = torch.vmap(self.member_loss)(theta)
            (grad,) = torch.autograd.grad(losses.sum(), theta)
        return losses.detach(), grad

    def hessian(self, theta: Tensor, member_chunk: int | None = None) -> Tensor:
        """Exact Hessians (E, P, P), symmetrised, computed ``member_chunk`` members at a time."""
        chunk = member_chunk or self.default_hessian_chunk(theta)
        hess_fn = torch.vmap(torch.func.hessian(self.member_loss))
        out = torch.empty(
            theta.shape[0], theta.shape[1], theta.shape[1], dtype=theta.dtype, device=theta.device
        )
        with torch.no_grad():
            for start in range(0, theta.shape[0], chunk):
                h = hess_fn(theta[start : start + chunk].detach())
                out[start : start + chunk] = 0.5 * (h + h.transpose(-1, -2))
        return out

    def default_hessian_chunk(self, theta: Tensor) -> int:
        return max(1, theta.shape[0])

    def step_loop(self, theta: Tensor) -> AbstractContextManager[None]:
        """A context for a loop that alternates :meth:`loss_and_grad` on theta-shaped
        parameters with small torch ops (a first-order trainer); nothing by default."""
        return nullcontext()


class DataObjective(Objective):
    """L_e = 1/(2N) sum_n |f_e(x_n) - y_n|^2 on inputs x (N, d_in) and targets y (N, d_out).

    ``kernel`` chooses how loss and gradient are computed: ``"fused"`` the fused C kernel of
    :mod:`escapelab.problems.shallow_kernel` (one hidden layer, CPU, float32/float64; compiled
    on first use), ``"torch"`` the chunked torch path (``chunk_size`` samples at a time),
    ``"auto"`` the fused kernel where it applies and can be compiled (otherwise the torch path,
    with a one-line notice once per process when only the compiler is missing).
    """

    def __init__(
        self,
        arch: Architecture,
        x: Tensor,
        y: Tensor,
        chunk_size: int | None = None,
        kernel: str = "auto",
    ):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        if kernel == "fused" and not shallow_kernel.available(x.dtype):
            raise ValueError(
                "kernel='fused' is unavailable here "
                f"({shallow_kernel.unavailable_reason(x.dtype)}); use 'auto' or 'torch'"
            )
        if x.ndim != 2 or x.shape[1] != arch.d_in:
            raise ValueError(f"x must have shape (N, {arch.d_in}), got {tuple(x.shape)}")
        if y.ndim == 1:
            y = y.unsqueeze(1)
        if y.shape != (x.shape[0], arch.d_out):
            raise ValueError(
                f"y must have shape ({x.shape[0]}, {arch.d_out}), got {tuple(y.shape)}"
            )
        self.arch, self.x, self.y = arch, x, y
        self.chunk_size = chunk_size
        self.kernel = kernel
        self._transposed: tuple[Tensor, Tensor] | None = None
        self._workspace: tuple[Tensor, ...] = ()
        self._workspace_key: tuple | None = None

    @property
    def n_samples(self) -> int:
        return self.x.shape[0]

    def to(self, dtype: torch.dtype) -> DataObjective:
        if dtype == self.x.dtype:
            return self
        return DataObjective(
            self.arch, self.x.to(dtype), self.y.to(dtype), self.chunk_size, self.kernel
        )

    def member_loss(self, theta: Tensor) -> Tensor:
        f = self.arch.forward(theta, self.x)
        return 0.5 * ((f - self.y) ** 2).sum() / self.n_samples

    def hessian(self, theta: Tensor, member_chunk: int | None = None) -> Tensor:
        """Exact Hessians (E, P, P): closed form for one hidden layer, torch.func otherwise."""
        if len(self.arch.widths) != 1:
            return super().hessian(theta, member_chunk)
        # the per-sample unit-pair weights of a chunk, (chunk, N, m^2 (out + 1)), stay near 64 MB
        m = self.arch.widths[0]
        per_member = self.n_samples * m * m * (self.arch.d_out + 1) * theta.element_size()
        chunk = member_chunk or max(1, min(theta.shape[0], (64 << 20) // per_member))
        theta = theta.detach()
        out = torch.empty(
            theta.shape[0], theta.shape[1], theta.shape[1], dtype=theta.dtype, device=theta.device
        )
        for start in range(0, theta.shape[0], chunk):
            out[start : start + chunk] = shallow_hessian(
                self.arch, theta[start : start + chunk], self.x, self.y
            )
        return out

    def default_hessian_chunk(self, theta: Tensor) -> int:
        # forward-over-reverse keeps about P tangents of every (N, width) activation per member
        per_member = theta.shape[1] * self.n_samples * (sum(self.arch.widths) + self.arch.d_out) * 6
        return max(1, min(theta.shape[0], int(2e8 // max(per_member, 1))))

    def _chunk_size(self, n_members: int, dtype: torch.dtype) -> int:
        if self.chunk_size:
            return self.chunk_size
        # a (chunk, width * E) activation block of about 4 MB stays in cache (measured best on a
        # 2-core AVX-512 machine between 1 and 8 MB)
        row_bytes = n_members * self.arch.widths[0] * torch.finfo(dtype).bits // 8
        return max(16, min(self.n_samples, (4 << 20) // max(1, row_bytes)))

    def _buffers(self, rows: int, cols: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        key = (rows, cols, like.dtype, like.device)
        if self._workspace_key != key:
            self._workspace = tuple(
                torch.empty(rows, cols, dtype=like.dtype, device=like.device) for _ in range(3)
            )
            self._workspace_key = key
        return self._workspace

    def loss(self, theta: Tensor) -> Tensor:
        return self._evaluate(theta, with_grad=False)[0]

    def loss_and_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        loss, grad = self._evaluate(theta, with_grad=True)
        assert grad is not None
        return loss, grad

    def uses_fused_kernel(self, theta: Tensor) -> bool:
        """Whether :meth:`loss_and_grad` on ``theta`` runs the fused C kernel."""
        if self.kernel == "torch" or not shallow_kernel.supports(self.arch, theta):
            return False
        if theta.dtype != self.x.dtype:
            return False
        if shallow_kernel.available(theta.dtype):
            return True
        shallow_kernel.notice_fallback(theta.dtype)
        return False

    def step_loop(self, theta: Tensor) -> AbstractContextManager[None]:
        """On the fused kernel, torch's own ops run on one thread meanwhile (the kernel keeps
        the threads; see :func:`~escapelab.problems.shallow_kernel.torch_serial`)."""
        if self.uses_fused_kernel(theta):
            return shallow_kernel.torch_serial()
        return nullcontext()

    def _evaluate(self, theta: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        if self.uses_fused_kernel(theta):
            if self._transposed is None:
                self._transposed = (self.x.t().contiguous(), self.y.t().contiguous())
            return shallow_kernel.loss_and_grad(self.arch, theta, *self._transposed, with_grad)
        return self._evaluate_torch(theta, with_grad)

    def _evaluate_torch(self, theta: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        """Fused forward (and backward) over sample chunks, in torch ops.

        The first hidden layer of all members is one GEMM, x (C, d) @ W (d, m1 * E), with columns
        ordered unit-major, member-minor, so per-member sums over units are reductions over a
        middle axis of contiguous (C, E) slabs. Deeper layers use batched matmuls in (E, C, m).
        """
        arch, act = self.arch, self.arch.act
        n_members, m1, n = theta.shape[0], arch.widths[0], self.n_samples
        theta = theta.detach()
        layers = arch.unflatten(theta)
        first, hidden, out = layers[0], layers[1:-1], layers[-1]
        # the activation's input scale (2 for tanh) is folded into the first layer's weights
        scale = act.input_scale
        w1 = scale * first.weight.permute(2, 1, 0).reshape(arch.d_in, m1 * n_members)
        b1 = None if first.bias is None else scale * first.bias.t().reshape(-1)
        shallow = not hidden
        a_t = out.weight.permute(1, 2, 0).contiguous() if shallow else None  # (out, m1, E)
        loss = torch.zeros(n_members, dtype=theta.dtype, device=theta.device)
        g_w1 = torch.zeros_like(w1) if with_grad else None
        g_b1 = torch.zeros_like(b1) if with_grad and b1 is not None else None
        grad = torch.zeros_like(theta) if with_grad else None
        g_layers = arch.unflatten(grad) if grad is not None else []
        g_out_bias = g_layers[-1].bias if g_layers else None
        g_a_t = torch.zeros_like(a_t) if with_grad and shallow else None
        step = self._chunk_size(n_members, theta.dtype)
        for start in range(0, n, step):
            xc, yc = self.x[start : start + step], self.y[start : start + step]
            c = xc.shape[0]
            z, slope, tmp = (b.narrow(0, 0, c) for b in self._buffers(step, m1 * n_members, theta))
            if b1 is None:
                torch.mm(xc, w1, out=z)
            else:
                torch.addmm(b1, xc, w1, out=z)
            h = act.apply_(z, slope, prescaled=True).view(c, m1, n_members)
            tmp3 = tmp.view(c, m1, n_members)
            if shallow:
                r = torch.stack(
                    [torch.mul(h, a_t[o], out=tmp3).sum(1) for o in range(arch.d_out)], 1
                )
                if out.bias is not None:
                    r += out.bias.t()
                r -= yc.unsqueeze(2)  # (C, out, E)
            else:
                hs, slopes, r = self._deep_forward(h, yc, hidden, out)
            loss += 0.5 * r.square().sum(dim=(0, 1))
            if not with_grad:
                continue
            r /= n
            if shallow:
                for o in range(arch.d_out):
                    g_a_t[o] += torch.mul(h, r[:, o : o + 1], out=tmp3).sum(0)
                delta = torch.mul(r[:, 0:1], a_t[0], out=tmp3)
                for o in range(1, arch.d_out):
                    delta.addcmul_(r[:, o : o + 1], a_t[o])
                delta.mul_(slope.view(c, m1, n_members))
                if out.bias is not None:
                    g_out_bias.add_(r.sum(0).t())
            else:
                g_h1 = self._deep_backward(r, hs, slopes, hidden, out, g_layers)
                delta = tmp3.copy_(g_h1.permute(1, 2, 0)).mul_(slope.view(c, m1, n_members))
            g_w1.addmm_(xc.t(), delta.view(c, -1))
            if g_b1 is not None:
                g_b1 += delta.sum(0).view(-1)
        if grad is None:
            return loss / n, None
        g_layers[0].weight.copy_(g_w1.view(arch.d_in, m1, n_members).permute(2, 1, 0))
        if g_b1 is not None:
            g_layers[0].bias.copy_(g_b1.view(m1, n_members).t())
        if shallow:
            g_layers[-1].weight.copy_(g_a_t.permute(2, 0, 1))
        return loss / n, grad

    def _deep_forward(
        self, h1: Tensor, yc: Tensor, hidden: list[Layer], out: Layer
    ) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """Layers 2..L and the output in (E, C, m) layout: activations, slopes, residual."""
        act = self.arch.act
        hs, slopes = [h1.permute(2, 0, 1)], []
        for layer in hidden:
            z = torch.matmul(hs[-1], layer.weight.transpose(1, 2))
            if layer.bias is not None:
                z += layer.bias.unsqueeze(1)
            slope = torch.empty_like(z)
            hs.append(act.apply_(z, slope))
            slopes.append(slope)
        f = torch.matmul(hs[-1], out.weight.transpose(1, 2))  # (E, C, out)
        if out.bias is not None:
            f += out.bias.unsqueeze(1)
        return hs, slopes, f.permute(1, 2, 0) - yc.unsqueeze(2)

    @staticmethod
    def _deep_backward(
        r: Tensor,
        hs: list[Tensor],
        slopes: list[Tensor],
        hidden: list[Layer],
        out: Layer,
        g_layers: list[Layer],
    ) -> Tensor:
        """Backpropagate the scaled residual r (C, out, E) to layer 2; return dL/dh1 (E, C, m1)."""
        r_e = r.permute(2, 0, 1)  # (E, C, out)
        g_layers[-1].weight.add_(torch.matmul(r_e.transpose(1, 2), hs[-1]))
        if out.bias is not None:
            g_layers[-1].bias.add_(r_e.sum(1))
        delta = torch.matmul(r_e, out.weight)
        for li in range(len(hidden) - 1, -1, -1):
            delta.mul_(slopes[li])
            g_layers[li + 1].weight.add_(torch.matmul(delta.transpose(1, 2), hs[li]))
            if hidden[li].bias is not None:
                g_layers[li + 1].bias.add_(delta.sum(1))
            delta = torch.matmul(delta, hidden[li].weight)
        return delta
