"""Curvature of the loss of any ``torch.nn.Module``: Hessian-vector products, exact Hessians,
extreme eigenpairs, Hessian traces and spectral densities.

Every function takes the same three things a training loop has:

* ``model`` -- any ``torch.nn.Module``, evaluated in its current train/eval mode;
* ``loss_fn(outputs, targets) -> scalar`` -- the MEAN loss over a batch's samples (as the default
  ``reduction="mean"`` of ``torch.nn`` losses);
* ``data`` -- either one batch ``(inputs, targets)`` of tensors, or a re-iterable collection of
  such batches (a list, a ``torch.utils.data.DataLoader``). Over several batches the full-data
  loss is the sample-weighted mean of the batch losses, sum_b n_b L_b / N with n_b =
  ``len(targets)``, and gradients and Hessian-vector products are accumulated batch by batch,
  so memory is that of one batch whatever the dataset's size. Batches are moved to the device
  of the parameters.

and optionally ``params``, which selects the parameters to differentiate by name (see
:func:`hvp_operator`); the others are held fixed. Vectors are flat, the selected parameters
concatenated in ``model.named_parameters()`` order (:meth:`HVPOperator.unflatten` undoes it).

The model's buffers are restored after every pass over the data, so that a BatchNorm layer in
training mode does not have its running statistics moved by the hundreds of forward passes an
eigensolver makes. A BatchNorm layer in training mode normalises with the statistics of the batch
it sees, so over micro-batches the per-batch losses do not average to the full-data loss; that
combination is refused.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

if TYPE_CHECKING:
    from scipy.sparse.linalg import LinearOperator

LossFn: TypeAlias = Callable[[Tensor, Tensor], Tensor]
Pattern: TypeAlias = str | re.Pattern[str]
ParamSelection: TypeAlias = Pattern | Sequence[Pattern] | None

__all__ = [
    "EigenResult",
    "HVPOperator",
    "SpectralDensity",
    "TraceEstimate",
    "exact_hessian",
    "hutchinson_trace",
    "hvp_operator",
    "lanczos_eigs",
    "spectral_density",
]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class EigenResult:
    """Extreme Hessian eigenpairs from :func:`lanczos_eigs`.

    ``eigenvalues`` (k,) are ordered from the extreme inwards: descending for ``which="top"``,
    ascending for ``"bottom"``. ``eigenvectors`` (P, k) are unit columns (None if not asked for).
    ``residuals`` (k,) are ||H v - lambda v|| measured with one extra HVP per pair, and
    ``converged`` (k,) says which pairs ARPACK accepted; pairs it did not deliver are NaN and
    come last (the delivered ones are then not guaranteed to be the most extreme).
    ``n_matvecs`` counts every HVP made, the residual checks included. All tensors are float64
    on the CPU.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor | None
    residuals: Tensor
    converged: Tensor
    n_matvecs: int


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson estimate of tr(H) and its standard error (sample std / sqrt(n_probes)).

    ``converged`` is False only when a stopping rule (``rel_tol``) was asked for and the
    probe budget ran out before the standard error fell below it.
    """

    trace: float
    stderr: float
    n_probes: int
    converged: bool = True


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian's eigenvalue distribution.

    ``nodes`` and ``weights`` (M,) are the Ritz values and Gauss-quadrature weights of all probes
    together (weights sum to 1): sum_i weights_i f(nodes_i) estimates tr f(H) / P. ``density``
    is that measure smoothed by a Gaussian of width ``sigma`` on ``grid``, normalised so that its
    trapezoidal integral over the grid is 1. All tensors are float64 on the CPU.
    """

    nodes: Tensor
    weights: Tensor
    grid: Tensor
    density: Tensor
    sigma: float

    def moment(self, order: int) -> float:
        """sum_i w_i nodes_i^order, the estimate of tr(H^order) / P."""
        return float((self.weights * self.nodes.pow(order)).sum())


# --------------------------------------------------------------------------- parameters


def _matches(pattern: Pattern, name: str) -> bool:
    """A str is an fnmatch glob, a compiled regex must match the whole name."""
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _select_parameters(model: nn.Module, params: ParamSelection) -> list[tuple[str, Tensor]]:
    """The (name, parameter) pairs to differentiate: all trainable ones, or those matching."""
    named = list(model.named_parameters())
    trainable = [(name, p) for name, p in named if p.requires_grad]
    if params is None:
        if not trainable:
            raise ValueError("the model has no parameter with requires_grad=True")
        return trainable
    patterns = [params] if isinstance(params, str | re.Pattern) else list(params)
    if not patterns:
        raise ValueError("params is an empty collection of name patterns")
    for pattern in patterns:
        if not isinstance(pattern, str | re.Pattern):
            raise TypeError(f"params patterns must be str globs or re.Pattern, got {pattern!r}")
    chosen = [(name, p) for name, p in trainable if any(_matches(q, name) for q in patterns)]
    if not chosen:
        frozen = [
            n for n, p in named if not p.requires_grad and any(_matches(q, n) for q in patterns)
        ]
        shown = ", ".join(repr(n) for n, _ in trainable[:8])
        more = f" (and {len(trainable) - 8} more)" if len(trainable) > 8 else ""
        hint = f"; it only matches frozen parameters ({', '.join(frozen[:4])})" if frozen else ""
        raise ValueError(
            f"params={params!r} matches no trainable parameter{hint}. Patterns are fnmatch globs "
            f"(str) or compiled regexes (full match); available names: {shown or 'none'}{more}"
        )
    return chosen


# --------------------------------------------------------------------------- data


def _training_batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm modules in training mode ("" is the model itself)."""
    return [
        name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, _BatchNorm) and m.training
    ]


def _batchnorm_error(names: list[str]) -> ValueError:
    return ValueError(
        f"the model has BatchNorm layers in training mode ({', '.join(names[:4])}) and the data "
        "comes in several batches: each batch would be normalised with its own batch statistics, "
        "so the per-batch losses do not average to the full-data loss and the curvature would be "
        "that of no well-defined function. Call model.eval() first (running statistics), or pass "
        "the whole dataset as one (inputs, targets) batch."
    )


def _is_single_batch(data: object) -> bool:
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, Tensor) for t in data)
    )


@contextlib.contextmanager
def _buffers_restored(model: nn.Module) -> Iterator[None]:
    """Put every buffer (BatchNorm running statistics, ...) back as it was on exit.

    Only buffers whose values changed are written back (BatchNorm's kernels update running
    statistics without moving the version counter, so values are compared too): a buffer the
    loss only reads (a constant matrix, say) must keep its version for a kept graph.
    """
    saved = [(b, b._version, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, version, copy in saved:
                if buf._version != version or not torch.equal(buf, copy):
                    buf.copy_(copy)


# --------------------------------------------------------------------------- operator


class HVPOperator:
    """Hessian-vector products of the full-data loss with respect to the selected parameters.

    Built by :func:`hvp_operator`. A product is a double backward (Pearlmutter 1994, "Fast exact
    multiplication by the Hessian") through the graph of the gradient g = dL/dtheta: H v =
    d(g . v)/dtheta. With ``reuse_graph`` the forward pass and the first backward (with
    ``create_graph``) run once, on the first product, and every product after that is one
    backward through the kept graph (about 40 % less work per product on MLPs; what PyHessian
    does for one batch; not with BatchNorm layers in training mode); the kept graph holds the
    activations of all the data, so without it
    each product is a fresh pass over the data, batch by batch, and no graph outlives a batch.
    The kept graph is rebuilt when a selected parameter is modified in place after it was built.
    :meth:`matmat` computes several products in one batched backward (``vmap`` over the
    ``grad_outputs``). ``n_matvecs`` counts the products made so far.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: tuple[Tensor, Tensor] | Iterable[Any],
        params: ParamSelection = None,
        reuse_graph: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(outputs, targets) -> scalar")
        self.model, self.loss_fn, self.data = model, loss_fn, data
        self._single = _is_single_batch(data)
        if not self._single:
            if not isinstance(data, Iterable) or isinstance(data, Tensor):
                raise TypeError(
                    "data must be an (inputs, targets) pair of tensors or an iterable of such "
                    f"batches, got {type(data).__name__}"
                )
            if isinstance(data, Iterator):
                raise ValueError(
                    "data is a one-shot iterator, but every Hessian-vector product is a new pass "
                    "over the data: pass a list of batches or a DataLoader instead"
                )
            training_bn = _training_batchnorms(model)
            if training_bn and isinstance(data, Sized) and len(data) > 1:
                raise _batchnorm_error(training_bn)

        selected = _select_parameters(model, params)
        dtypes = {p.dtype for _, p in selected}
        devices = {p.device for _, p in selected}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                "the selected parameters must share one dtype and one device, got "
                f"{sorted(map(str, dtypes))} on {sorted(map(str, devices))}; select a subset with "
                "params= or convert the model"
            )
        self.param_names = [name for name, _ in selected]
        self._params = [p for _, p in selected]
        self.param_shapes = [tuple(p.shape) for p in self._params]
        self.n_params = sum(p.numel() for p in self._params)
        self.dtype = self._params[0].dtype
        self.device = self._params[0].device
        self.n_matvecs = 0
        # a BatchNorm layer in training mode saves its running statistics in the graph, and
        # restoring them after the forward pass would invalidate a kept graph
        training_bn = _training_batchnorms(model)
        if reuse_graph and training_bn:
            names = ", ".join(training_bn[:4])
            raise ValueError(
                f"reuse_graph=True needs BatchNorm layers in eval mode ({names} are in training "
                "mode): call model.eval() or pass reuse_graph=False"
            )
        self.reuse_graph = (
            self._single and not training_bn if reuse_graph is None else bool(reuse_graph)
        )
        # per batch: (first derivatives with their graph, their parameters, n_samples)
        self._kept: list[tuple[tuple[Tensor, ...], tuple[Tensor, ...], int]] = []
        self._kept_versions: list[int] = []

    # ----------------------------------------------------------------- vectors

    def unflatten(self, v: Tensor) -> dict[str, Tensor]:
        """Split a flat vector (P,) into per-parameter tensors (views where possible)."""
        v = torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
        if v.shape != (self.n_params,):
            raise ValueError(f"expected a vector of shape ({self.n_params},), got {tuple(v.shape)}")
        parts = v.split([p.numel() for p in self._params])
        return {
            name: part.view(shape)
            for name, part, shape in zip(self.param_names, parts, self.param_shapes, strict=True)
        }

    def _flatten(self, parts: Sequence[Tensor]) -> Tensor:
        return torch.cat([t.reshape(-1) for t in parts])

    # ----------------------------------------------------------------- data passes

    def _batches(self) -> Iterator[tuple[Any, Tensor, int]]:
        """(inputs, targets, n_samples) on the parameters' device, one batch at a time."""
        batches = [self.data] if self._single else self.data
        training_bn = _training_batchnorms(self.model)
        for index, batch in enumerate(batches):
            if index == 1 and training_bn:
                raise _batchnorm_error(training_bn)
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                raise ValueError(f"each batch must be a pair (inputs, targets), got {type(batch)}")
            inputs, targets = batch
            if not isinstance(targets, Tensor) or targets.ndim == 0:
                raise ValueError("targets must be a tensor with a leading sample dimension")
            if isinstance(inputs, Tensor):
                inputs = inputs.to(self.device)
            yield inputs, targets.to(self.device), targets.shape[0]

    def _mean_over_data(self, per_batch: Callable[[Tensor], Tensor]) -> Tensor:
        """sum_b n_b per_batch(L_b) / N, where L_b is batch b's loss (with autograd enabled)."""
        total: Tensor | None = None
        n_total = 0
        with _buffers_restored(self.model), torch.enable_grad():
            for inputs, targets, n in self._batches():
                loss = self.loss_fn(self.model(inputs), targets)
                if not isinstance(loss, Tensor) or loss.numel() != 1:
                    raise ValueError("loss_fn must return a scalar tensor (the batch's mean loss)")
                value = per_batch(loss.reshape(()))
                total = value * n if total is None else total.add_(value, alpha=n)
                n_total += n
        if total is None or n_total == 0:
            raise ValueError("data contains no samples")
        return total / n_total

    def _grads(self, loss: Tensor) -> tuple[Tensor, ...]:
        """First derivatives with a graph (zeros for parameters the loss does not use)."""
        return torch.autograd.grad(loss, self._params, create_graph=True, materialize_grads=True)

    def _batch_hvp(self, loss: Tensor, v_parts: list[Tensor]) -> Tensor:
        pairs = [(g, v) for g, v in zip(self._grads(loss), v_parts, strict=True) if g.requires_grad]
        if not pairs:  # the loss is linear in the selected parameters
            return torch.zeros(self.n_params, dtype=self.dtype, device=self.device)
        grads, vs = zip(*pairs, strict=True)
        hv = torch.autograd.grad(grads, self._params, grad_outputs=vs, materialize_grads=True)
        return self._flatten(hv)

    def _batch_hessian(self, loss: Tensor) -> Tensor:
        grad = self._flatten(self._grads(loss))
        out = torch.zeros(self.n_params, self.n_params, dtype=self.dtype, device=self.device)
        if grad.requires_grad:
            for i in range(self.n_params):
                row = torch.autograd.grad(
                    grad[i], self._params, retain_graph=True, materialize_grads=True
                )
                out[i] = self._flatten(row)
        return out

    def _kept_graph(self) -> list[tuple[tuple[Tensor, ...], tuple[Tensor, ...], int]]:
        """The first derivatives of every batch with their graphs, built once (see the class
        docstring); rebuilt when a parameter's version counter moved (an in-place update)."""
        versions = [p._version for p in self._params]
        if self._kept and versions == self._kept_versions:
            return self._kept
        kept = []
        with _buffers_restored(self.model), torch.enable_grad():
            for inputs, targets, n in self._batches():
                loss = self.loss_fn(self.model(inputs), targets)
                if not isinstance(loss, Tensor) or loss.numel() != 1:
                    raise ValueError("loss_fn must return a scalar tensor (the batch's mean loss)")
                grads = self._grads(loss.reshape(()))
                used = [(g, p) for g, p in zip(grads, self._params, strict=True) if g.requires_grad]
                kept.append((tuple(g for g, _ in used), tuple(p for _, p in used), n))
        if not kept or sum(n for *_, n in kept) == 0:
            raise ValueError("data contains no samples")
        self._kept, self._kept_versions = kept, versions
        return kept

    def _kept_products(self, vs: Tensor, batched: bool) -> Tensor:
        """H vs through the kept graphs: vs (P,) or, with ``batched``, (k, P) -> same shape."""
        kept = self._kept_graph()
        sizes = [p.numel() for p in self._params]
        lead = (vs.shape[0],) if batched else ()
        parts = dict(zip(map(id, self._params), vs.split(sizes, dim=-1), strict=True))
        total = torch.zeros(*lead, self.n_params, dtype=self.dtype, device=self.device)
        n_total = sum(n for *_, n in kept)
        for grads, params, n in kept:
            if not grads:  # the loss is linear in the selected parameters
                continue
            outs = [parts[id(p)].reshape(*lead, *p.shape) for p in params]
            hv = torch.autograd.grad(
                grads,
                self._params,
                grad_outputs=outs,
                retain_graph=True,
                materialize_grads=True,
                is_grads_batched=batched,
            )
            total.add_(torch.cat([h.reshape(*lead, -1) for h in hv], dim=-1), alpha=n)
        return total / n_total

    # ----------------------------------------------------------------- public products

    def matvec(self, v: Tensor) -> Tensor:
        """H v for a flat vector v (P,); returned on the parameters' device and dtype."""
        if self.reuse_graph:
            v = torch.as_tensor(v).to(device=self.device, dtype=self.dtype)
            if v.shape != (self.n_params,):
                raise ValueError(
                    f"expected a vector of shape ({self.n_params},), got {tuple(v.shape)}"
                )
            hv = self._kept_products(v, batched=False)
        else:
            v_parts = list(self.unflatten(v).values())
            hv = self._mean_over_data(lambda loss: self._batch_hvp(loss, v_parts))
        self.n_matvecs += 1
        return hv

    def matmat(self, vs: Tensor) -> Tensor:
        """H V for k vectors stacked as rows, vs (k, P) -> (k, P).

        With ``reuse_graph`` one batched backward (``is_grads_batched``, i.e. ``vmap`` over the
        vectors) does all k; otherwise, or where an operation has no batching rule, k products.
        """
        vs = torch.as_tensor(vs).to(device=self.device, dtype=self.dtype)
        if vs.ndim != 2 or vs.shape[1] != self.n_params:
            raise ValueError(
                f"expected vectors of shape (k, {self.n_params}), got {tuple(vs.shape)}"
            )
        if self.reuse_graph and vs.shape[0] > 1:
            try:
                out = self._kept_products(vs, batched=True)
            except RuntimeError:  # an operation without a batching rule: one at a time
                pass
            else:
                self.n_matvecs += vs.shape[0]
                return out
        return torch.stack([self.matvec(v) for v in vs])

    def hessian(self) -> Tensor:
        """The full (P, P) Hessian, one backward pass per row and batch, symmetrised."""
        hess = self._mean_over_data(self._batch_hessian)
        return 0.5 * (hess + hess.T)

    def as_linear_operator(self) -> LinearOperator:
        """This operator as a symmetric float64 ``scipy.sparse.linalg.LinearOperator``."""
        from scipy.sparse.linalg import LinearOperator  # where used: see lanczos_eigs

        def apply(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
            return self.matvec(v).detach().to("cpu", torch.float64).numpy()

        shape = (self.n_params, self.n_params)
        return LinearOperator(shape, matvec=apply, rmatvec=apply, dtype=np.float64)


def hvp_operator(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[Tensor, Tensor] | Iterable[Any],
    *,
    params: ParamSelection = None,
    reuse_graph: bool | None = None,
) -> HVPOperator:
    """Hessian-vector products of ``loss_fn(model(inputs), targets)`` over ``data``.

    ``params`` picks the parameters by name: a glob such as ``"layers.0.*"`` (fnmatch), a
    compiled ``re.Pattern`` (which must match the whole name), or a sequence of these (their
    union); the default is every parameter with ``requires_grad``. ``reuse_graph`` keeps the
    gradient's graph between products (default: when ``data`` is one batch; True for several
    batches keeps every batch's activations in memory); see :class:`HVPOperator`. See the
    module docstring for ``loss_fn`` and ``data``.
    """
    return HVPOperator(model, loss_fn, data, params, reuse_graph)


# --------------------------------------------------------------------------- exact Hessian


def exact_hessian(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[Tensor, Tensor] | Iterable[Any],
    *,
    params: ParamSelection = None,
    max_params: int = 5000,
) -> Tensor:
    """The exact (P, P) Hessian of the full-data loss, on the parameters' device and dtype.

    Costs P backward passes per batch and P^2 memory, so models with more than ``max_params``
    selected parameters are refused; use :func:`lanczos_eigs` or :func:`spectral_density` there,
    or restrict ``params``.
    """
    op = hvp_operator(model, loss_fn, data, params=params)
    if op.n_params > max_params:
        raise ValueError(
            f"exact_hessian: {op.n_params} selected parameters is above max_params={max_params} "
            f"(the Hessian would take {op.n_params**2 * op.dtype.itemsize / 2**30:.1f} "
            "GiB and P backward passes per batch); restrict params=, raise max_params, or use "
            "lanczos_eigs / spectral_density"
        )
    return op.hessian()


# --------------------------------------------------------------------------- eigenpairs


def lanczos_eigs(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[Tensor, Tensor] | Iterable[Any],
    *,
    params: ParamSelection = None,
    k: int = 5,
    which: Literal["top", "bottom"] = "top",
    tol: float | None = None,
    maxiter: int | None = None,
    ncv: int | None = None,
    seed: int = 0,
    return_eigenvectors: bool = True,
    reuse_graph: bool | None = None,
) -> EigenResult:
    """The k largest (``"top"``) or smallest (``"bottom"``, algebraically) Hessian eigenpairs.

    Implicitly restarted Lanczos (ARPACK through ``scipy.sparse.linalg.eigsh``, which "LA" or
    "SA") on :class:`HVPOperator`, from a start vector drawn with ``numpy.random.default_rng(seed)``
    so that runs repeat exactly. ``tol`` is ARPACK's relative accuracy (default: machine precision
    for float64 parameters, sqrt(eps) of the parameters' dtype otherwise, because HVPs are only
    that accurate); ``maxiter`` and ``ncv`` are passed to ``eigsh``. If ARPACK stops before all k
    pairs converge, a RuntimeWarning is issued and the missing pairs are NaN with
    ``converged=False``. ``reuse_graph`` is passed to :func:`hvp_operator` (default: keep the
    gradient's graph for one batch of data).

    Accuracy against speed: ARPACK stops when every Ritz pair's estimated error is below
    ``tol`` times its eigenvalue, so a looser ``tol`` saves HVPs, not accuracy per HVP. On the
    123,610-parameter MLP of ``bench/bench_curvature.py`` (top 5) tol = 1e-3 still gave the
    eigenvalues to about 1e-9 relative error, where PyHessian's power iteration at its default
    1e-3 is 1-5 % off; see the measured table in ``bench/README.md``.
    """
    if which not in ("top", "bottom"):
        raise ValueError(f"which must be 'top' or 'bottom', got {which!r}")
    op = hvp_operator(model, loss_fn, data, params=params, reuse_graph=reuse_graph)
    if not 1 <= k <= op.n_params - 1:
        raise ValueError(
            f"k must be between 1 and P - 1 = {op.n_params - 1} for the {op.n_params} selected "
            f"parameters, got k={k}; for all eigenvalues use torch.linalg.eigvalsh(exact_hessian())"
        )
    if tol is None:
        tol = 0.0 if op.dtype == torch.float64 else math.sqrt(torch.finfo(op.dtype).eps)
    # scipy is imported where it is used: at module level it adds about 60 MiB and a second or
    # two to every process that imports escapelab
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    v0 = np.random.default_rng(seed).standard_normal(op.n_params)
    try:
        values, vectors = eigsh(
            op.as_linear_operator(),
            k=k,
            which="LA" if which == "top" else "SA",
            v0=v0,
            tol=tol,
            maxiter=maxiter,
            ncv=ncv,
        )
    except ArpackNoConvergence as err:
        values, vectors = err.eigenvalues, err.eigenvectors
        warnings.warn(
            f"lanczos_eigs: ARPACK converged {len(values)} of {k} eigenpairs; the rest are NaN. "
            "Raise maxiter or ncv, or loosen tol.",
            RuntimeWarning,
            stacklevel=2,
        )
    order = np.argsort(-values if which == "top" else values)
    values, vectors = values[order], vectors[:, order]
    found = len(values)

    residuals = torch.full((k,), math.nan, dtype=torch.float64)
    if found:
        vecs = torch.from_numpy(np.ascontiguousarray(vectors.T)).to(op.device, op.dtype)
        lam = torch.from_numpy(values.astype(np.float64)).to(op.device, op.dtype)
        resid = op.matmat(vecs) - lam[:, None] * vecs
        residuals[:found] = torch.linalg.vector_norm(resid, dim=1).to("cpu", torch.float64)

    eigenvalues = torch.full((k,), math.nan, dtype=torch.float64)
    eigenvalues[:found] = torch.from_numpy(values.astype(np.float64))
    eigenvectors = None
    if return_eigenvectors:
        eigenvectors = torch.full((op.n_params, k), math.nan, dtype=torch.float64)
        eigenvectors[:, :found] = torch.from_numpy(vectors.astype(np.float64))
    converged = torch.arange(k) < found
    return EigenResult(eigenvalues, eigenvectors, residuals, converged, op.n_matvecs)


# --------------------------------------------------------------------------- stochastic methods


def _rademacher(op: HVPOperator, gen: torch.Generator) -> Tensor:
    """A vector of independent +-1 entries on the operator's device and dtype."""
    bits = torch.randint(0, 2, (op.n_params,), generator=gen, device=op.device, dtype=op.dtype)
    return bits.mul_(2).sub_(1)


def _standard_error_met(samples: list[float], rel_tol: float | None) -> bool:
    """Whether the mean of ``samples`` has a standard error of at most rel_tol |mean|."""
    if rel_tol is None:
        return False
    values = torch.tensor(samples, dtype=torch.float64)
    stderr = float(values.std(correction=1)) / math.sqrt(len(samples))
    return stderr <= rel_tol * abs(float(values.mean()))


def hutchinson_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[Tensor, Tensor] | Iterable[Any],
    *,
    params: ParamSelection = None,
    n_probes: int = 100,
    seed: int = 0,
    rel_tol: float | None = None,
    min_probes: int = 10,
    block: int = 8,
    reuse_graph: bool | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate tr(H) ~ mean_i z_i^T H z_i over Rademacher probes z_i.

    Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines". Unbiased, with variance 2 (||H||_F^2 - sum_j H_jj^2) / n_probes per
    estimate; the reported standard error is the probes' sample std / sqrt(n_probes). Probes
    come from a ``torch.Generator`` seeded with ``seed`` on the parameters' device, ``block``
    at a time (one batched HVP each, :meth:`HVPOperator.matmat`).

    Without ``rel_tol`` exactly ``n_probes`` probes are used. With it, ``n_probes`` is the
    budget and probing stops once at least ``min_probes`` (default 10, never fewer than 3)
    probes give a standard error at most ``rel_tol`` times |estimate|. PyHessian instead stops
    when two consecutive running means differ by less than its tolerance, which can happen
    after two probes whatever the variance (issue 15 measured 13.9 against 8.4 +- 0.5); a rule
    on the standard error needs a few probes to estimate that error at all, hence the minimum.
    ``converged`` says whether the rule was met within the budget.
    """
    if n_probes < 2:
        raise ValueError(f"n_probes must be >= 2 to estimate a standard error, got {n_probes}")
    if rel_tol is not None and not rel_tol > 0:
        raise ValueError(f"rel_tol must be positive (or None for a fixed n_probes), got {rel_tol}")
    if min_probes < 3:
        raise ValueError(f"min_probes must be >= 3 for a stopping rule, got {min_probes}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    op = hvp_operator(model, loss_fn, data, params=params, reuse_graph=reuse_graph)
    gen = torch.Generator(device=op.device).manual_seed(seed)
    samples: list[float] = []
    met = False
    while len(samples) < n_probes and not met:
        done = len(samples)
        take = min(block, n_probes - done)
        probes = torch.stack([_rademacher(op, gen) for _ in range(take)])
        samples += (probes * op.matmat(probes)).sum(dim=1).tolist()
        # the rule is checked after every probe, so the block size never changes the result
        for count in range(max(min_probes, done + 1), len(samples) + 1):
            if _standard_error_met(samples[:count], rel_tol):
                samples, met = samples[:count], True
                break
    values = torch.tensor(samples, dtype=torch.float64)
    stderr = float(values.std(correction=1)) / math.sqrt(len(samples))
    return TraceEstimate(float(values.mean()), stderr, len(samples), rel_tol is None or met)


def _lanczos_tridiagonal(op: HVPOperator, v0: Tensor, steps: int) -> Tensor:
    """The tridiagonal Lanczos matrix T (m, m), m <= steps, of H from the unit vector v0.

    Every new vector is orthogonalised against all previous ones, twice (Parlett's "twice is
    enough"), which subsumes the three-term recurrence and keeps T free of the spurious copies of
    converged Ritz values that plain Lanczos produces in floating point. The iteration stops
    early when the Krylov space becomes invariant (beta below sqrt(eps) times the largest entry
    of T); the quadrature is then exact up to that beta.
    """
    basis = torch.empty(steps, op.n_params, dtype=op.dtype, device=op.device)
    basis[0] = v0
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    threshold = math.sqrt(torch.finfo(op.dtype).eps)
    for j in range(steps):
        w = op.matvec(basis[j])
        alpha = float(torch.dot(basis[j], w))
        alphas.append(alpha)
        done = basis[: j + 1]
        for _ in range(2):
            w = w - done.T @ (done @ w)
        beta = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(alpha), beta)
        if j == steps - 1 or beta <= threshold * scale:
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    diag = torch.tensor(alphas, dtype=torch.float64)
    off = torch.tensor(betas, dtype=torch.float64)
    return torch.diag(diag) + torch.diag(off, 1) + torch.diag(off, -1)


def _make_grid(grid: Tensor | np.ndarray | int | None, nodes: Tensor, sigma: float) -> Tensor:
    if grid is None or isinstance(grid, int):
        points = 2001 if grid is None else grid
        if points < 2:
            raise ValueError(f"grid must have at least 2 points, got {points}")
        lo, hi = float(nodes.min()) - 5 * sigma, float(nodes.max()) + 5 * sigma
        return torch.linspace(lo, hi, points, dtype=torch.float64)
    values = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if values.ndim != 1 or values.numel() < 2 or not bool((values.diff() > 0).all()):
        raise ValueError("grid must be a strictly increasing 1-D array of at least 2 points")
    return values


def spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    data: tuple[Tensor, Tensor] | Iterable[Any],
    *,
    params: ParamSelection = None,
    n_probes: int = 10,
    lanczos_steps: int = 80,
    seed: int = 0,
    grid: Tensor | np.ndarray | int | None = None,
    sigma: float | None = None,
    reuse_graph: bool | None = None,
) -> SpectralDensity:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature.

    Ubaru, Chen & Saad (2017), "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature";
    Ghorbani, Krishnan & Xiao (2019), "An investigation into neural net optimization via Hessian
    eigenvalue density". For each of ``n_probes`` Rademacher probes (normalised to unit length,
    drawn from a ``torch.Generator`` seeded with ``seed``), ``lanczos_steps`` Lanczos steps with
    full reorthogonalisation give a tridiagonal T = U diag(theta) U^T; the nodes are theta and
    the weights U[0, :]^2 / n_probes. With m steps the quadrature is exact, per probe, for
    polynomials of degree up to 2m - 1, so sum w node^p ~ tr(H^p) / P for small p up to the
    probes' Monte Carlo error.

    ``sigma`` (default 1% of the nodes' span) is the Gaussian smoothing width; ``grid`` is a
    strictly increasing array of points or a number of points (default 2001) spread over the
    nodes' range widened by 5 sigma; it should be finer than sigma. Memory: lanczos_steps x P
    numbers for the Lanczos basis.
    """
    if n_probes < 1 or lanczos_steps < 1:
        raise ValueError(
            f"n_probes and lanczos_steps must be >= 1, got {n_probes} and {lanczos_steps}"
        )
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    op = hvp_operator(model, loss_fn, data, params=params, reuse_graph=reuse_graph)
    steps = min(lanczos_steps, op.n_params)
    gen = torch.Generator(device=op.device).manual_seed(seed)
    all_nodes, all_weights = [], []
    for _ in range(n_probes):
        probe = _rademacher(op, gen)
        ritz, vecs = torch.linalg.eigh(_lanczos_tridiagonal(op, probe / probe.norm(), steps))
        all_nodes.append(ritz)
        all_weights.append(vecs[0].square() / n_probes)
    nodes, weights = torch.cat(all_nodes), torch.cat(all_weights)

    if sigma is None:
        span = float(nodes.max() - nodes.min())
        sigma = 0.01 * (span if span > 0 else max(float(nodes.abs().max()), 1.0))
    points = _make_grid(grid, nodes, sigma)
    z = (points[:, None] - nodes[None, :]) / sigma
    density = (torch.exp(-0.5 * z.square()) @ weights) / (sigma * math.sqrt(2 * math.pi))
    mass = float(torch.trapezoid(density, points))
    if not mass > 0:
        raise ValueError(
            f"the grid [{float(points[0]):.4g}, {float(points[-1]):.4g}] holds no density: the "
            f"nodes lie in [{float(nodes.min()):.4g}, {float(nodes.max()):.4g}]"
        )
    return SpectralDensity(nodes, weights, points, density / mass, float(sigma))
