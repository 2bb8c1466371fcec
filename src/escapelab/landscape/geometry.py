"""Loss-landscape geometry: linear interpolation between two networks, 1-D and 2-D slices.

Every quantity is the loss on a grid of points ``coeffs @ basis`` that are linear combinations of
a few parameter vectors: ``(1 - t) theta_a + t theta_b`` for an interpolation, ``theta + alpha
delta`` and ``theta + alpha delta + beta eta`` for slices. Two front-ends evaluate such grids:

* the flat one takes an escapelab :class:`~escapelab.problems.objective.Objective` and flat
  vectors (P,); the grid points are stacked as ensemble members and evaluated by
  ``objective.loss`` a chunk at a time, so one call covers many points (the fast path);
* the module one takes a ``torch.nn.Module``, a loss function and data; parameters are flat
  vectors in ``parameters_to_vector`` order, each grid point is copied into the model's
  parameters in place, and the parameters and buffers are restored afterwards, also when the
  loss function raises.

Barrier of a linear path (the chord form of Entezari et al. 2022, "The role of permutation
invariance in linear mode connectivity of neural networks"; the interpolation experiment itself
is Goodfellow et al. 2015 and Frankle et al. 2020, "Linear mode connectivity and the lottery
ticket hypothesis")::

    B = max_{t in [0, 1]} L((1 - t) theta_a + t theta_b) - ((1 - t) L(theta_a) + t L(theta_b)),

taken over the grid points in [0, 1] and the two endpoints, so B >= 0 and B = 0 for a convex
loss. Random slice directions are Gaussian and filter-normalised (Li et al. 2018, "Visualizing
the loss landscape of neural nets"): see :func:`filter_normalize`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from escapelab.nets.mlp import Architecture
from escapelab.problems.objective import Objective

BiasMode = Literal["zero", "layer"]
Grid = Sequence[float] | Tensor | None
Metric = Callable[[Tensor], Tensor]
ModuleLoss = Callable[[Any, Any], Any]
ModuleMetric = Callable[[Any, Any], float]
Data = tuple[Any, Any] | Iterable[Any]

DEFAULT_INTERPOLATION = (0.0, 1.0, 41)
DEFAULT_SLICE_1D = (-1.0, 1.0, 41)
DEFAULT_SLICE_2D = (-1.0, 1.0, 21)
CHUNK_BYTES = 64 << 20
MAX_CHUNK = 256
ENDPOINT_SNAP = 1e-12


@dataclass(frozen=True)
class Interpolation:
    """Loss (and accuracy) at (1 - t) theta_a + t theta_b, and the barrier of the path.

    ``t``, ``loss`` and ``accuracy`` are float64 CPU tensors (T,). ``barrier_t`` is the grid t
    in [0, 1] where the barrier is attained (the first in grid order; an endpoint when no point
    rises above the chord).
    """

    t: Tensor
    loss: Tensor
    accuracy: Tensor | None
    loss_a: float
    loss_b: float
    barrier: float
    barrier_t: float


@dataclass(frozen=True)
class Slice1D:
    """Loss (and accuracy) at theta + alpha * direction for every alpha; float64 CPU (A,)."""

    alpha: Tensor
    loss: Tensor
    accuracy: Tensor | None
    direction: Tensor
    center_loss: float
    normalized: bool


@dataclass(frozen=True)
class Slice2D:
    """Loss at theta + alpha_i delta + beta_j eta as ``loss[i, j]``; float64 CPU (A, B)."""

    alpha: Tensor
    beta: Tensor
    loss: Tensor
    accuracy: Tensor | None
    directions: tuple[Tensor, Tensor]
    center_loss: float
    normalized: bool


def param_shapes(source: Architecture | nn.Module) -> list[torch.Size]:
    """Shapes of the parameter tensors, in the order they are laid out in a flat vector.

    For an :class:`Architecture` these are the views of ``unflatten`` (W_1, b_1, W_2, ...); for a
    module, those of ``module.parameters()`` (the order of ``parameters_to_vector``).
    """
    if isinstance(source, Architecture):
        layers = source.unflatten(torch.empty(source.n_params, device="meta"))
        return [t.shape for layer in layers for t in (layer.weight, layer.bias) if t is not None]
    return [p.shape for p in source.parameters()]


def filter_normalize(
    direction: Tensor, theta: Tensor, shapes: Sequence[torch.Size], bias: BiasMode = "zero"
) -> Tensor:
    """Rescale every filter of ``direction`` (P,) to the norm of the same filter of ``theta``.

    Li et al. 2018: a filter is a slice along dim 0 of a parameter tensor with ndim >= 2 (for a
    fully connected layer, one row of the weight matrix: one output unit's incoming weights), so
    that a step along the direction is commensurate with the scale of each unit, which the
    rescaling symmetries of ReLU-like networks otherwise leave arbitrary. Tensors with ndim <= 1
    (biases, normalisation gains) are zeroed with ``bias="zero"`` (Li et al.'s choice of leaving
    them unperturbed), or with ``bias="layer"`` rescaled as a whole, as one filter, to the norm
    of the same tensor of ``theta``. A filter whose direction is zero stays zero.
    """
    _check_flat(direction, "direction")
    _check_flat(theta, "theta")
    total = sum(shape.numel() for shape in shapes)
    if direction.shape != theta.shape or total != theta.shape[0]:
        raise ValueError(
            f"direction {tuple(direction.shape)}, theta {tuple(theta.shape)} and the parameter "
            f"shapes ({total} entries) must agree"
        )
    if bias not in ("zero", "layer"):
        raise ValueError(f"bias must be 'zero' or 'layer', got {bias!r}")
    out = torch.zeros_like(direction)
    offset = 0
    for shape in shapes:
        n = shape.numel()
        if len(shape) >= 2 or bias == "layer":
            rows = shape[0] if len(shape) >= 2 else 1
            d = direction[offset : offset + n].reshape(rows, -1)
            w = theta[offset : offset + n].reshape(rows, -1)
            d_norm, w_norm = d.norm(dim=1, keepdim=True), w.norm(dim=1, keepdim=True)
            scale = torch.where(d_norm > 0, w_norm / d_norm, 0.0)
            out[offset : offset + n] = (d * scale).reshape(-1)
        offset += n
    return out


def random_direction(
    theta: Tensor,
    shapes: Sequence[torch.Size],
    generator: torch.Generator,
    *,
    normalize: bool = True,
    bias: BiasMode = "zero",
) -> Tensor:
    """A standard Gaussian direction like ``theta`` (P,), filter-normalised unless told not to.

    The draw is made on the CPU in float64 from ``generator`` and then cast to theta's dtype and
    device, so a seed gives the same direction everywhere (as ``Architecture.init`` does).
    """
    _check_flat(theta, "theta")
    draw = torch.randn(theta.shape[0], generator=generator, dtype=torch.float64)
    direction = draw.to(dtype=theta.dtype, device=theta.device)
    return filter_normalize(direction, theta, shapes, bias) if normalize else direction


# ---------------------------------------------------------------------------------------------
# flat / ensemble front-end


def interpolate(
    objective: Objective,
    theta_a: Tensor,
    theta_b: Tensor,
    *,
    t: Grid = None,
    metric: Metric | None = None,
    chunk: int | None = None,
) -> Interpolation:
    """Loss along (1 - t) theta_a + t theta_b for flat vectors (P,) and the barrier of the path.

    ``t`` defaults to 41 points in [0, 1]; values outside [0, 1] extrapolate (they are plotted
    but do not enter the barrier); values within 1e-12 of 0 or 1 are snapped to them. The
    barrier is the maximum over the grid, a lower bound of the supremum over [0, 1].
    ``metric`` maps stacked parameters (E, P) to (E,), e.g. an accuracy. ``chunk`` is the number
    of points per ``objective.loss`` call (default: as many as fit the stacked points in 64 MiB,
    at most 256).
    """
    _check_pair(theta_a, theta_b)
    ts = _interpolation_grid(t)
    coeffs, basis, ends = _interpolation_coeffs(ts, theta_a, theta_b)
    loss, acc = _flat_values(objective, coeffs, basis, metric, chunk)
    return _interpolation_result(ts, loss, acc, ends)


def slice_1d(
    objective: Objective,
    theta: Tensor,
    direction: Tensor | None = None,
    *,
    alpha: Grid = None,
    seed: int = 0,
    normalize: bool | None = None,
    bias: BiasMode = "zero",
    metric: Metric | None = None,
    chunk: int | None = None,
) -> Slice1D:
    """Loss at theta + alpha * direction for a flat theta (P,) of ``objective.arch``.

    Without ``direction`` a Gaussian one is drawn from ``torch.Generator().manual_seed(seed)``.
    ``normalize`` (default: True for a drawn direction, False for a given one, e.g. a Hessian
    eigenvector) applies :func:`filter_normalize` with the rows of ``objective.arch``'s layers as
    filters. ``alpha`` defaults to 41 points in [-1, 1].
    """
    _check_flat(theta, "theta")
    alphas = _grid(alpha, DEFAULT_SLICE_1D)
    shapes = param_shapes(objective.arch)
    (d,), normalized = _directions(theta, (direction,), shapes, seed, normalize, bias)
    coeffs = _with_one(_line_coeffs(alphas))
    loss, acc = _flat_values(objective, coeffs, torch.stack([theta, d]), metric, chunk)
    return Slice1D(alphas, loss[1:], _tail(acc, 1), d, float(loss[0]), normalized)


def slice_2d(
    objective: Objective,
    theta: Tensor,
    directions: tuple[Tensor, Tensor] | None = None,
    *,
    alpha: Grid = None,
    beta: Grid = None,
    seed: int = 0,
    normalize: bool | None = None,
    bias: BiasMode = "zero",
    metric: Metric | None = None,
    chunk: int | None = None,
) -> Slice2D:
    """Loss at theta + alpha delta + beta eta on the grid alpha x beta (21 x 21 in [-1, 1]).

    Drawn directions come from one generator seeded with ``seed``, delta first. The options are
    those of :func:`slice_1d`.
    """
    _check_flat(theta, "theta")
    alphas, betas = _grid(alpha, DEFAULT_SLICE_2D), _grid(beta, DEFAULT_SLICE_2D)
    shapes = param_shapes(objective.arch)
    given = (None, None) if directions is None else directions
    dirs, normalized = _directions(theta, given, shapes, seed, normalize, bias)
    coeffs = _with_one(_plane_coeffs(alphas, betas))
    loss, acc = _flat_values(objective, coeffs, torch.stack([theta, *dirs]), metric, chunk)
    return _slice_2d_result(alphas, betas, loss, acc, dirs, normalized)


# ---------------------------------------------------------------------------------------------
# torch.nn.Module front-end


def module_vector(model: nn.Module) -> Tensor:
    """A detached copy of the model's parameters as one flat vector (``parameters_to_vector``)."""
    return nn.utils.parameters_to_vector(model.parameters()).detach().clone()


def interpolate_module(
    model: nn.Module,
    loss_fn: ModuleLoss,
    data: Data,
    theta_a: Tensor,
    theta_b: Tensor,
    *,
    t: Grid = None,
    metric_fn: ModuleMetric | None = None,
) -> Interpolation:
    """:func:`interpolate` for a module: theta_a, theta_b are flat vectors (see module_vector).

    ``loss_fn(outputs, targets)`` must return the mean over the batch and ``metric_fn`` a batch
    mean too (e.g. the fraction classified correctly): over several batches the values are
    averaged with weights equal to the batch sizes, which for mean-reduced losses is the loss on
    all the data. ``data`` is one ``(inputs, targets)`` pair of tensors or an iterable of such
    pairs (a DataLoader); it is iterated once. The model runs in its current train/eval mode
    under ``torch.no_grad``, and its parameters and buffers are restored afterwards.
    """
    _check_pair(theta_a, theta_b)
    ts = _interpolation_grid(t)
    coeffs, basis, ends = _interpolation_coeffs(ts, theta_a, theta_b)
    loss, acc = _module_values(model, loss_fn, data, coeffs, basis, metric_fn)
    return _interpolation_result(ts, loss, acc, ends)


def slice_1d_module(
    model: nn.Module,
    loss_fn: ModuleLoss,
    data: Data,
    direction: Tensor | None = None,
    *,
    center: Tensor | None = None,
    alpha: Grid = None,
    seed: int = 0,
    normalize: bool | None = None,
    bias: BiasMode = "zero",
    metric_fn: ModuleMetric | None = None,
) -> Slice1D:
    """:func:`slice_1d` for a module, around ``center`` (default: its current parameters).

    Filters are slices along dim 0 of every parameter tensor with ndim >= 2 (conv kernels and
    linear weights alike). Data, loss and metric are as in :func:`interpolate_module`.
    """
    theta = module_vector(model) if center is None else center
    _check_flat(theta, "center")
    alphas = _grid(alpha, DEFAULT_SLICE_1D)
    shapes = param_shapes(model)
    (d,), normalized = _directions(theta, (direction,), shapes, seed, normalize, bias)
    coeffs = _with_one(_line_coeffs(alphas))
    loss, acc = _module_values(model, loss_fn, data, coeffs, torch.stack([theta, d]), metric_fn)
    return Slice1D(alphas, loss[1:], _tail(acc, 1), d, float(loss[0]), normalized)


def slice_2d_module(
    model: nn.Module,
    loss_fn: ModuleLoss,
    data: Data,
    directions: tuple[Tensor, Tensor] | None = None,
    *,
    center: Tensor | None = None,
    alpha: Grid = None,
    beta: Grid = None,
    seed: int = 0,
    normalize: bool | None = None,
    bias: BiasMode = "zero",
    metric_fn: ModuleMetric | None = None,
) -> Slice2D:
    """:func:`slice_2d` for a module; options as in :func:`slice_1d_module`."""
    theta = module_vector(model) if center is None else center
    _check_flat(theta, "center")
    alphas, betas = _grid(alpha, DEFAULT_SLICE_2D), _grid(beta, DEFAULT_SLICE_2D)
    shapes = param_shapes(model)
    given = (None, None) if directions is None else directions
    dirs, normalized = _directions(theta, given, shapes, seed, normalize, bias)
    coeffs = _with_one(_plane_coeffs(alphas, betas))
    basis = torch.stack([theta, *dirs])
    loss, acc = _module_values(model, loss_fn, data, coeffs, basis, metric_fn)
    return _slice_2d_result(alphas, betas, loss, acc, dirs, normalized)


# ---------------------------------------------------------------------------------------------
# shared helpers


def _check_flat(v: Tensor, name: str) -> None:
    if not isinstance(v, Tensor) or v.ndim != 1:
        raise ValueError(
            f"{name} must be a flat parameter vector (P,), got {getattr(v, 'shape', v)}"
        )


def _check_pair(theta_a: Tensor, theta_b: Tensor) -> None:
    _check_flat(theta_a, "theta_a")
    _check_flat(theta_b, "theta_b")
    if theta_a.shape != theta_b.shape:
        raise ValueError(
            f"theta_a {tuple(theta_a.shape)} and theta_b {tuple(theta_b.shape)} differ"
        )


def _grid(values: Grid, default: tuple[float, float, int]) -> Tensor:
    """A float64 CPU grid (N,) from user values, or linspace(*default)."""
    if values is None:
        return torch.linspace(default[0], default[1], default[2], dtype=torch.float64)
    grid = torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)
    if grid.numel() == 0:
        raise ValueError("the grid is empty")
    return grid


def _interpolation_grid(values: Grid) -> Tensor:
    """The t grid, with values within 1e-12 of 0 or 1 snapped to them: a grid such as
    linspace(-0.5, 1.5, 81), whose "0" is 3e-17, then holds the endpoints exactly."""
    ts = _grid(values, DEFAULT_INTERPOLATION)
    for end in (0.0, 1.0):
        ts = torch.where((ts - end).abs() < ENDPOINT_SNAP, end, ts)
    return ts


def _directions(
    theta: Tensor,
    given: tuple[Tensor | None, ...],
    shapes: Sequence[torch.Size],
    seed: int,
    normalize: bool | None,
    bias: BiasMode,
) -> tuple[list[Tensor], bool]:
    """The slice directions: drawn where ``given`` has None (one generator, in order), and
    filter-normalised when ``normalize`` says so (by default only the drawn ones)."""
    if all(d is None for d in given):
        generator = torch.Generator().manual_seed(seed)
        do_norm = True if normalize is None else normalize
        dirs = [
            random_direction(theta, shapes, generator, normalize=do_norm, bias=bias) for _ in given
        ]
        return dirs, do_norm
    if any(d is None for d in given):
        raise ValueError("give all slice directions or none")
    do_norm = bool(normalize)
    dirs = []
    for d in given:
        _check_flat(d, "direction")
        if d.shape != theta.shape:
            raise ValueError(
                f"direction {tuple(d.shape)} does not match theta {tuple(theta.shape)}"
            )
        d = d.detach().to(dtype=theta.dtype, device=theta.device)
        dirs.append(filter_normalize(d, theta, shapes, bias) if do_norm else d)
    return dirs, do_norm


def _with_one(coeffs: Tensor) -> Tensor:
    """Prefix a column of ones: the coefficient of the centre theta."""
    return torch.cat([torch.ones(coeffs.shape[0], 1, dtype=coeffs.dtype), coeffs], dim=1)


def _line_coeffs(alphas: Tensor) -> Tensor:
    """(1 + A, 1): the centre alpha = 0 first, then the grid."""
    return torch.cat([torch.zeros(1, dtype=alphas.dtype), alphas]).unsqueeze(1)


def _plane_coeffs(alphas: Tensor, betas: Tensor) -> Tensor:
    """(1 + A B, 2): the centre (0, 0) first, then the grid with beta varying fastest."""
    a, b = torch.meshgrid(alphas, betas, indexing="ij")
    grid = torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)
    return torch.cat([torch.zeros(1, 2, dtype=grid.dtype), grid])


def _interpolation_coeffs(
    ts: Tensor, theta_a: Tensor, theta_b: Tensor
) -> tuple[Tensor, Tensor, tuple[Tensor, int, int]]:
    """Coefficients (1 - t, t) for the grid plus t = 0 and t = 1 where the grid lacks them.

    Returns the coefficients, the basis (theta_a; theta_b) and (all t, index of t = 0, of t = 1).
    """
    extra = [v for v in (0.0, 1.0) if not bool((ts == v).any())]
    all_t = torch.cat([ts, torch.tensor(extra, dtype=torch.float64)])
    i0 = int((all_t == 0.0).nonzero()[0])
    i1 = int((all_t == 1.0).nonzero()[0])
    coeffs = torch.stack([1.0 - all_t, all_t], dim=1)
    return coeffs, torch.stack([theta_a, theta_b.to(theta_a)]), (all_t, i0, i1)


def _interpolation_result(
    ts: Tensor, loss: Tensor, acc: Tensor | None, ends: tuple[Tensor, int, int]
) -> Interpolation:
    """Barrier over the evaluated points with t in [0, 1]; the grid part of the values."""
    all_t, i0, i1 = ends
    loss_a, loss_b = loss[i0], loss[i1]
    inside = (all_t >= 0.0) & (all_t <= 1.0)
    excess = loss[inside] - ((1.0 - all_t[inside]) * loss_a + all_t[inside] * loss_b)
    k = int(torch.argmax(excess))
    n = ts.shape[0]
    return Interpolation(
        t=ts,
        loss=loss[:n],
        accuracy=None if acc is None else acc[:n],
        loss_a=float(loss_a),
        loss_b=float(loss_b),
        barrier=float(excess[k]),
        barrier_t=float(all_t[inside][k]),
    )


def _slice_2d_result(
    alphas: Tensor,
    betas: Tensor,
    loss: Tensor,
    acc: Tensor | None,
    dirs: list[Tensor],
    normalized: bool,
) -> Slice2D:
    shape = (alphas.shape[0], betas.shape[0])
    return Slice2D(
        alpha=alphas,
        beta=betas,
        loss=loss[1:].reshape(shape),
        accuracy=None if acc is None else acc[1:].reshape(shape),
        directions=(dirs[0], dirs[1]),
        center_loss=float(loss[0]),
        normalized=normalized,
    )


def _tail(values: Tensor | None, start: int) -> Tensor | None:
    return None if values is None else values[start:]


def _points(coeffs: Tensor, basis: Tensor) -> Tensor:
    """Rows sum_j coeffs[:, j] * basis[j], as explicit products so that a zero coefficient
    contributes exactly nothing (theta itself comes out bit-exact)."""
    c = coeffs.to(dtype=basis.dtype, device=basis.device)
    out = c[:, 0:1] * basis[0]
    for j in range(1, basis.shape[0]):
        out += c[:, j : j + 1] * basis[j]
    return out


def _chunk(n_points: int, n_params: int, element_size: int, chunk: int | None) -> int:
    """Members per ``objective.loss`` call: ``chunk``, or as many as keep the stacked points
    within 64 MiB (at most 256; the objective's own work memory grows with the members too)."""
    if chunk is not None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        return chunk
    return max(1, min(n_points, MAX_CHUNK, CHUNK_BYTES // max(1, n_params * element_size)))


def _flat_values(
    objective: Objective, coeffs: Tensor, basis: Tensor, metric: Metric | None, chunk: int | None
) -> tuple[Tensor, Tensor | None]:
    """Loss (and metric) of every grid point, evaluated as ensemble members chunk by chunk."""
    n = coeffs.shape[0]
    step = _chunk(n, basis.shape[1], basis.element_size(), chunk)
    losses, metrics = [], []
    for start in range(0, n, step):
        points = _points(coeffs[start : start + step], basis)
        losses.append(_as_column(objective.loss(points), points.shape[0], "objective.loss"))
        if metric is not None:
            metrics.append(_as_column(metric(points), points.shape[0], "metric"))
    return torch.cat(losses), torch.cat(metrics) if metric is not None else None


def _as_column(values: Tensor, n: int, name: str) -> Tensor:
    out = torch.as_tensor(values).detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    if out.shape[0] != n:
        raise ValueError(f"{name} returned {out.shape[0]} values for {n} points")
    return out


def _batches(data: Data) -> Iterable[Any]:
    """One ``(inputs, targets)`` pair of tensors as a single batch, anything else as batches."""
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor):
        return [data]
    return data


def _module_values(
    model: nn.Module,
    loss_fn: ModuleLoss,
    data: Data,
    coeffs: Tensor,
    basis: Tensor,
    metric_fn: ModuleMetric | None,
) -> tuple[Tensor, Tensor | None]:
    """Batch-size-weighted mean loss (and metric) of every grid point on all the data.

    Batches are the outer loop so that a data loader is read once; each grid point is copied
    into the parameters in place (their storage and identity are kept).
    """
    params = list(model.parameters())
    buffers = list(model.buffers())
    if sum(p.numel() for p in params) != basis.shape[1]:
        raise ValueError(
            f"the vectors have {basis.shape[1]} entries, the model "
            f"{sum(p.numel() for p in params)} parameters"
        )
    saved = [t.detach().clone() for t in (*params, *buffers)]
    n = coeffs.shape[0]
    loss_sum = torch.zeros(n, dtype=torch.float64)
    metric_sum = torch.zeros(n, dtype=torch.float64)
    count = 0
    try:
        with torch.no_grad():
            for batch in _batches(data):
                inputs, targets = batch[0], batch[1]
                size = len(targets)
                for i in range(n):
                    _assign(params, _points(coeffs[i : i + 1], basis)[0])
                    outputs = model(inputs)
                    loss_sum[i] += float(loss_fn(outputs, targets)) * size
                    if metric_fn is not None:
                        metric_sum[i] += float(metric_fn(outputs, targets)) * size
                count += size
    finally:
        with torch.no_grad():
            for t, s in zip((*params, *buffers), saved, strict=True):
                t.copy_(s)
    if count == 0:
        raise ValueError("data has no samples")
    return loss_sum / count, metric_sum / count if metric_fn is not None else None


def _assign(params: list[nn.Parameter], vector: Tensor) -> None:
    """Copy consecutive pieces of ``vector`` into ``params`` in place."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(vector[offset : offset + n].view_as(p))
        offset += n
