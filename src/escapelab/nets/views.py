"""Two views of one ensemble of fully connected networks, and exact converters between them.

* The **flat view**: an :class:`~escapelab.nets.mlp.Architecture` and parameters theta (E, P),
  row e member e, flattened layer by layer (``W_1, b_1, ..., W_out, b_out``). The full-batch
  trainer, the objectives with their exact Hessians, endpoint classification, the symmetry
  tools and neuron splitting work on it.
* The **named view**: a dict of (E, ...) tensors named as the parameters of escapelab's
  :class:`~escapelab.nets.classifiers.MLP` (``net.{2i}.weight`` (E, fan_out, fan_in) and
  ``net.{2i}.bias`` (E, fan_out) for layer i, the output layer last). A
  :class:`~escapelab.nets.stacked.StackedModel` of that MLP trains it with the mini-batch
  trainer, IMP prunes it, and one member is an ordinary ``nn.Module`` for the curvature tools.

:func:`to_flat` and :func:`to_named` copy the same numbers from one layout to the other (no
arithmetic), so a round trip returns identical tensors and both views compute the same
function: a student trained on teacher-student data, an IMP ticket, or a ``StackedModel`` of a
user's MLP can all go to the exact-Hessian classifier, and back.

The same names address a flat ensemble in place (:func:`named_views`: views into theta, how
pruning and masks act on it), and :func:`mask_to_flat` lays masks out in theta's layout (the
``free`` coordinates of a pruned network in :func:`escapelab.optim.full_batch.train`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from escapelab.nets.classifiers import MLP
from escapelab.nets.mlp import Architecture
from escapelab.nets.stacked import StackedModel


def module_names(arch: Architecture, include_bias: bool = True) -> list[str]:
    """The parameter names of the :class:`~escapelab.nets.classifiers.MLP` of ``arch``, in
    theta's layout order: ``net.{2i}.weight`` and, where layer i has one (and with
    ``include_bias``), ``net.{2i}.bias``."""
    names = []
    for i, (_, _, has_bias) in enumerate(arch.layer_dims):
        names.append(f"net.{2 * i}.weight")
        if has_bias and include_bias:
            names.append(f"net.{2 * i}.bias")
    return names


def named_views(arch: Architecture, theta: Tensor, include_bias: bool = True) -> dict[str, Tensor]:
    """Per-layer views of theta (..., P), no copies, named by :func:`module_names`: weights
    (..., fan_out, fan_in), biases (..., fan_out). Writes go through to theta, so masks and
    pruning (with ``batch_dims = theta.ndim - 1``) act on a flat ensemble through them."""
    named = {}
    for i, layer in enumerate(arch.unflatten(theta)):
        named[f"net.{2 * i}.weight"] = layer.weight
        if include_bias and layer.bias is not None:
            named[f"net.{2 * i}.bias"] = layer.bias
    return named


def to_named(arch: Architecture, theta: Tensor) -> dict[str, Tensor]:
    """The named view of theta (E, P): copies, named and ordered by :func:`module_names`."""
    return {n: v.clone() for n, v in named_views(arch, theta.detach()).items()}


def to_flat(arch: Architecture, params: Mapping[str, Tensor]) -> Tensor:
    """theta (E, P) from the named view ``params`` ((E, ...) tensors named by
    :func:`module_names`); ValueError naming a missing, unknown or misshapen tensor."""
    names = module_names(arch)
    unknown = [n for n in params if n not in names]
    missing = [n for n in names if n not in params]
    if unknown or missing:
        raise ValueError(
            f"parameters do not match {arch}: missing {missing}, unknown {unknown}; "
            f"expected {names}"
        )
    lead = params[names[0]].shape[:-2]
    shapes = named_views(arch, torch.empty(*lead, arch.n_params, device="meta"))
    for name, p in params.items():
        if p.shape != shapes[name].shape:
            raise ValueError(
                f"{name!r} has shape {tuple(p.shape)}, expected {tuple(shapes[name].shape)}"
            )
    return torch.cat([params[n].detach().reshape(*lead, -1) for n in names], dim=-1)


def mask_to_flat(arch: Architecture, masks: Mapping[str, Tensor]) -> Tensor:
    """A flat boolean mask (..., P) in theta's layout from masks named as in
    :func:`module_names`, all with the same leading shape (...); entries without a mask (the
    biases, by default) are kept (True). This is the ``free`` mask of
    :func:`escapelab.optim.full_batch.train` for a pruned network."""
    if not masks:
        raise ValueError("mask_to_flat needs at least one mask to know the leading shape")
    shapes = named_views(arch, torch.empty(arch.n_params, device="meta"))
    first_name, first = next(iter(masks.items()))
    if first_name not in shapes:
        raise ValueError(f"mask {first_name!r} names no layer tensor; allowed: {list(shapes)}")
    lead = first.shape[: first.ndim - shapes[first_name].ndim]
    kept = {
        n: torch.ones(*lead, *v.shape, dtype=torch.bool, device=first.device)
        for n, v in shapes.items()
    }
    # to_flat names any mask without a layer tensor of its name, or of another shape
    return to_flat(arch, {**kept, **{n: m != 0 for n, m in masks.items()}})


def flat_to_masks(
    arch: Architecture, flat: Tensor, include_bias: bool = False
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
    for name, view in named_views(arch, flat != 0).items():
        if name.endswith(".bias") and not include_bias:
            if not bool(view.all()):
                raise ValueError(
                    f"the flat mask prunes entries of {name!r}; pass include_bias=True to keep them"
                )
            continue
        masks[name] = view.clone()
    return masks


def mlp_architecture(module: nn.Module) -> Architecture:
    """The flat-view architecture of an escapelab :class:`~escapelab.nets.classifiers.MLP`
    (with at least one hidden layer); ValueError for any other module."""
    if not isinstance(module, MLP) or not module.hidden:
        what = "an MLP without hidden layers" if isinstance(module, MLP) else type(module).__name__
        raise ValueError(f"a flat view exists for escapelab's MLP with hidden layers; got {what}")
    return Architecture(
        module.n_features,
        module.hidden,
        module.n_classes,
        module.activation,
        bias=module.bias,
        output_bias=module.output_bias,
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
