"""Two views of one ensemble of fully connected networks, and exact converters between them.

* The **flat view**: an :class:`~escapelab.nets.mlp.Architecture` and parameters theta (E, P),
  row e member e, flattened layer by layer (``W_1, b_1, ..., W_out, b_out``). The full-batch
  trainer, the objectives with their exact Hessians, endpoint classification, the symmetry
  tools and neuron splitting work on it.
* The **named view**: a dict of (E, ...) tensors named as the parameters of a module, by
  default escapelab's :class:`~escapelab.nets.classifiers.MLP` (``net.{2i}.weight``
  (E, fan_out, fan_in) and ``net.{2i}.bias`` (E, fan_out) for layer i, the output layer last),
  or a user's ``nn.Sequential`` of ``Linear`` layers and activations (``layers``: the module
  paths of its ``Linear`` layers, from :func:`linear_layers`). A
  :class:`~escapelab.nets.stacked.StackedModel` of the module trains it with the mini-batch
  trainer, IMP prunes it, and one member is an ordinary ``nn.Module`` for the curvature tools.

:func:`to_flat` and :func:`to_named` copy the same numbers from one layout to the other (no
arithmetic), so a round trip returns identical tensors and both views compute the same
function: a student trained on teacher-student data, an IMP ticket, or a ``StackedModel`` of a
user's fully connected module can all go to the exact-Hessian classifier, and back.

The same names address a flat ensemble in place (:func:`named_views`: views into theta, how
pruning and masks act on it), and :func:`mask_to_flat` lays masks out in theta's layout (the
``free`` coordinates of a pruned network in :func:`escapelab.optim.full_batch.train`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from escapelab.nets.classifiers import MLP, Pointwise
from escapelab.nets.mlp import Architecture
from escapelab.nets.stacked import StackedModel

Layers = Sequence[str] | None


def _prefixes(arch: Architecture, layers: Layers) -> list[str]:
    """The module path of each layer's ``Linear``: ``layers``, or escapelab's MLP's ``net.{2i}``."""
    if layers is None:
        return [f"net.{2 * i}" for i in range(len(arch.layer_dims))]
    if len(layers) != len(arch.layer_dims):
        raise ValueError(
            f"layers names {len(layers)} Linear layers, the architecture has {len(arch.layer_dims)}"
        )
    return list(layers)


def module_names(arch: Architecture, include_bias: bool = True, layers: Layers = None) -> list[str]:
    """The parameter names of the module of ``arch``, in theta's layout order: ``{L}.weight``
    and, where layer L has one (and with ``include_bias``), ``{L}.bias``, for L in ``layers``
    (default: escapelab's MLP, ``net.0``, ``net.2``, ...)."""
    names = []
    for prefix, (_, _, has_bias) in zip(_prefixes(arch, layers), arch.layer_dims, strict=True):
        names.append(f"{prefix}.weight")
        if has_bias and include_bias:
            names.append(f"{prefix}.bias")
    return names


def named_views(
    arch: Architecture, theta: Tensor, include_bias: bool = True, layers: Layers = None
) -> dict[str, Tensor]:
    """Per-layer views of theta (..., P), no copies, named by :func:`module_names`: weights
    (..., fan_out, fan_in), biases (..., fan_out). Writes go through to theta, so masks and
    pruning (with ``batch_dims = theta.ndim - 1``) act on a flat ensemble through them."""
    named = {}
    for prefix, layer in zip(_prefixes(arch, layers), arch.unflatten(theta), strict=True):
        named[f"{prefix}.weight"] = layer.weight
        if include_bias and layer.bias is not None:
            named[f"{prefix}.bias"] = layer.bias
    return named


def to_named(arch: Architecture, theta: Tensor, layers: Layers = None) -> dict[str, Tensor]:
    """The named view of theta (E, P): copies, named and ordered by :func:`module_names`."""
    return {n: v.clone() for n, v in named_views(arch, theta.detach(), layers=layers).items()}


def to_flat(arch: Architecture, params: Mapping[str, Tensor], layers: Layers = None) -> Tensor:
    """theta (E, P) from the named view ``params`` ((E, ...) tensors named by
    :func:`module_names`); ValueError naming a missing, unknown or misshapen tensor."""
    names = module_names(arch, layers=layers)
    unknown = [n for n in params if n not in names]
    missing = [n for n in names if n not in params]
    if unknown or missing:
        raise ValueError(
            f"parameters do not match {arch}: missing {missing}, unknown {unknown}; "
            f"expected {names}"
        )
    lead = params[names[0]].shape[:-2]
    shapes = named_views(arch, torch.empty(*lead, arch.n_params, device="meta"), layers=layers)
    for name, p in params.items():
        if p.shape != shapes[name].shape:
            raise ValueError(
                f"{name!r} has shape {tuple(p.shape)}, expected {tuple(shapes[name].shape)}"
            )
    return torch.cat([params[n].detach().reshape(*lead, -1) for n in names], dim=-1)


def mask_to_flat(arch: Architecture, masks: Mapping[str, Tensor], layers: Layers = None) -> Tensor:
    """A flat boolean mask (..., P) in theta's layout from masks named as in
    :func:`module_names`, all with the same leading shape (...); entries without a mask (the
    biases, by default) are kept (True). This is the ``free`` mask of
    :func:`escapelab.optim.full_batch.train` for a pruned network."""
    if not masks:
        raise ValueError("mask_to_flat needs at least one mask to know the leading shape")
    shapes = named_views(arch, torch.empty(arch.n_params, device="meta"), layers=layers)
    first_name, first = next(iter(masks.items()))
    if first_name not in shapes:
        raise ValueError(f"mask {first_name!r} names no layer tensor; allowed: {list(shapes)}")
    lead = first.shape[: first.ndim - shapes[first_name].ndim]
    kept = {
        n: torch.ones(*lead, *v.shape, dtype=torch.bool, device=first.device)
        for n, v in shapes.items()
    }
    # to_flat names any mask without a layer tensor of its name, or of another shape
    return to_flat(arch, {**kept, **{n: m != 0 for n, m in masks.items()}}, layers)


def flat_to_masks(
    arch: Architecture, flat: Tensor, include_bias: bool = False, layers: Layers = None
) -> dict[str, Tensor]:
    """Masks by name from a flat mask (..., P); the inverse of :func:`mask_to_flat`.

    Without ``include_bias`` the bias entries are dropped, and must then all be kept: a flat
    mask that prunes a bias raises ValueError naming it.
    """
    if flat.ndim == 0 or flat.shape[-1] != arch.n_params:
        raise ValueError(
            f"flat mask has shape {tuple(flat.shape)}; its last dim must be the architecture's "
            f"{arch.n_params} parameters"
        )
    masks = {}
    for name, view in named_views(arch, flat != 0, layers=layers).items():
        if name.endswith(".bias") and not include_bias:
            if not bool(view.all()):
                raise ValueError(
                    f"the flat mask prunes entries of {name!r}; pass include_bias=True to keep them"
                )
            continue
        masks[name] = view.clone()
    return masks


# element-wise modules whose function is one of escapelab's activations, exactly
_ACTIVATION_MODULES: dict[type[nn.Module], str] = {
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.Sigmoid: "sigmoid",
    nn.Identity: "linear",
}


def _activation_name(module: nn.Module) -> str | None:
    """The escapelab activation ``module`` computes, or None."""
    if isinstance(module, Pointwise):
        return module.name
    if type(module) is nn.Softplus and module.beta == 1 and module.threshold == 20:
        return "softplus"  # torch.nn.functional.softplus's defaults: escapelab's softplus
    return _ACTIVATION_MODULES.get(type(module))


def _sequential_layout(seq: nn.Sequential, prefix: str) -> tuple[Architecture, tuple[str, ...]]:
    """Architecture and Linear paths of Linear, activation, ..., Linear; ValueError naming the
    first part that does not fit."""
    children = list(seq.named_children())
    linears = [(name, m) for name, m in children if isinstance(m, nn.Linear)]
    acts = [(name, _activation_name(m)) for name, m in children if not isinstance(m, nn.Linear)]
    where = f"{prefix}{type(seq).__name__}"
    expected = 2 * len(linears) - 1
    alternating = all(isinstance(m, nn.Linear) == (i % 2 == 0) for i, (_, m) in enumerate(children))
    if len(linears) < 2 or len(children) != expected or not alternating:
        raise ValueError(
            f"{where}: a flat view needs Linear, activation, Linear, ... Linear with a hidden "
            f"layer, got {[type(m).__name__ for _, m in children]}"
        )
    names = {a for _, a in acts}
    if None in names or len(names) != 1:
        allowed = "Tanh, ReLU, Sigmoid, Softplus(), Identity, escapelab Pointwise"
        raise ValueError(
            f"{where}: every activation must be one and the same of {allowed}; got "
            f"{[type(m).__name__ for _, m in children if not isinstance(m, nn.Linear)]}"
        )
    hidden = [m for _, m in linears[:-1]]
    if len({m.bias is not None for m in hidden}) != 1:
        raise ValueError(f"{where}: the hidden Linear layers must all have biases or none")
    for (_, m), (_, nxt) in itertools.pairwise(linears):
        if m.out_features != nxt.in_features:
            raise ValueError(f"{where}: Linear layers of sizes that do not chain")
    arch = Architecture(
        linears[0][1].in_features,
        tuple(m.out_features for m in hidden),
        linears[-1][1].out_features,
        names.pop(),
        bias=hidden[0].bias is not None,
        output_bias=linears[-1][1].bias is not None,
    )
    return arch, tuple(f"{prefix}{name}" for name, _ in linears)


def mlp_architecture(module: nn.Module) -> Architecture:
    """The flat-view architecture of a fully connected module: escapelab's
    :class:`~escapelab.nets.classifiers.MLP` with hidden layers, or an ``nn.Sequential`` of
    ``Linear`` layers alternating with one kind of escapelab activation (``Tanh``, ``ReLU``,
    ``Sigmoid``, default ``Softplus``, ``Identity``, ``Pointwise``); ValueError otherwise."""
    return _layout(module)[0]


def linear_layers(module: nn.Module) -> tuple[str, ...]:
    """The module paths of ``module``'s ``Linear`` layers in order (``net.0``, ``net.2``, ...
    for escapelab's MLP): the ``layers`` argument of this module's converters."""
    return _layout(module)[1]


def _layout(module: nn.Module) -> tuple[Architecture, tuple[str, ...]]:
    if isinstance(module, MLP):
        if not module.hidden:
            raise ValueError(
                "a flat view exists for fully connected networks with hidden layers; got an "
                "MLP without hidden layers"
            )
        return _sequential_layout(module.net, "net.")
    if isinstance(module, nn.Sequential):
        return _sequential_layout(module, "")
    raise ValueError(
        "a flat view exists for escapelab's MLP and nn.Sequential of Linear layers and "
        f"activations; got {type(module).__name__}"
    )


def stacked_mlp(
    arch: Architecture, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> StackedModel:
    """A :class:`~escapelab.nets.stacked.StackedModel` of the MLP of ``arch`` (same widths,
    activation and biases), so that a flat ensemble can be trained, pruned or evaluated in its
    named view; ``dtype`` defaults to float64, the flat view's precision."""
    if arch.d_in < 1:
        raise ValueError(f"d_in must be >= 1, got {arch.d_in}")

    def factory() -> nn.Module:
        return MLP(
            (arch.d_in,),
            arch.d_out,
            hidden=arch.widths,
            activation=arch.activation,
            bias=arch.bias,
            output_bias=arch.output_bias,
        )

    return StackedModel(factory, device=device, dtype=dtype or torch.float64)
