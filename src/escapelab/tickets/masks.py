"""Binary masks that live beside the parameters of a ``torch.nn.Module`` or of an ensemble.

A :class:`MaskSet` maps tensor names to boolean masks of the tensors' shapes: True keeps an
entry, False prunes it (the lottery-ticket masks of Frankle & Carbin 2019). For a module the names
are those of ``model.named_parameters()``; by default only weights (ndim >= 2) are prunable, and
biases join with ``include_bias=True``.

Wherever a module is accepted, a mapping of names to tensors is too; a mapping is taken as the
selection itself. This is how ensembles are served: a stacked ensemble's named (E, ...) tensors,
or the per-layer views of a flat ensemble theta (E, P) under the same names
(:func:`escapelab.nets.views.named_views`), whose masks :func:`escapelab.nets.views.mask_to_flat`
lays out in theta's layout; so one pruning code (:mod:`escapelab.tickets.pruning`) serves all.

Files hold plain tensors only: safetensors when it is installed, else ``torch.save``, read back
with ``torch.load(weights_only=True)``; no arbitrary object is ever unpickled. Loading detects the
format from the file, so a ``torch.save`` file loads anywhere.
"""

from __future__ import annotations

import importlib
import json
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeAlias

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

Target: TypeAlias = nn.Module | Mapping[str, Tensor]

_MODEL_PREFIX = "model/"
_MASK_PREFIX = "mask/"
_ORDER_KEY = "escapelab.names"
_MAX_LISTED = 12


def _listing(names: list[str]) -> str:
    """Names for an error message, the first few of a long list."""
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _named(target: Target) -> dict[str, Tensor]:
    """All tensors of ``target`` by name: a module's parameters, or the mapping itself."""
    if isinstance(target, nn.Module):
        return dict(target.named_parameters())
    tensors = dict(target)
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name!r} maps to a {type(t).__name__}, not a tensor")
    return tensors


def prunable_tensors(target: Target, include_bias: bool = False) -> dict[str, Tensor]:
    """The tensors masks cover by default, by name.

    For a module: its parameters with ndim >= 2 (weights), plus, with ``include_bias``, those whose
    name ends in ``bias``. A mapping is returned as given (``include_bias`` does not apply).
    """
    if not isinstance(target, nn.Module):
        return _named(target)
    return {
        name: p
        for name, p in target.named_parameters()
        if p.ndim >= 2 or (include_bias and name.rsplit(".", 1)[-1] == "bias")
    }


def _as_bool(name: str, mask: object) -> Tensor:
    """``mask`` as a boolean tensor; ValueError unless it is boolean or holds only 0 and 1."""
    if not isinstance(mask, Tensor):
        raise ValueError(f"mask {name!r} is a {type(mask).__name__}, not a tensor")
    mask = mask.detach()
    if mask.dtype == torch.bool:
        return mask.clone()
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"mask {name!r} must be boolean or hold only the values 0 and 1")
    return mask != 0


def _check_fits(masks: Mapping[str, Tensor], tensors: Mapping[str, Tensor], what: str) -> None:
    """ValueError naming the first mask without a tensor of its name, or of another shape."""
    for name, mask in masks.items():
        if name not in tensors:
            raise ValueError(f"mask {name!r} names no {what}; allowed: {_listing(list(tensors))}")
        if mask.shape != tensors[name].shape:
            raise ValueError(
                f"mask {name!r} has shape {tuple(mask.shape)}, but the {what} has shape "
                f"{tuple(tensors[name].shape)}"
            )


def _what(target: Target) -> str:
    return "parameter of the model" if isinstance(target, nn.Module) else "tensor"


@dataclass(frozen=True)
class LayerSparsity:
    """One masked tensor: entries in all, kept by the mask, and nonzero in the tensor now."""

    name: str
    shape: tuple[int, ...]
    total: int
    remaining: int
    density: float
    nonzero: int


@dataclass(frozen=True)
class SparsityReport:
    """Per-tensor rows and the global density (remaining / total over all masked tensors)."""

    layers: tuple[LayerSparsity, ...]
    total: int
    remaining: int
    density: float

    def __str__(self) -> str:
        rows = [("name", "shape", "total", "remaining", "density", "nonzero")]
        rows += [
            (
                r.name,
                str(r.shape),
                str(r.total),
                str(r.remaining),
                f"{r.density:.4f}",
                str(r.nonzero),
            )
            for r in self.layers
        ]
        rows.append(("global", "", str(self.total), str(self.remaining), f"{self.density:.4f}", ""))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        )


class MaskAttachment:
    """The hooks of :meth:`MaskSet.attach`; ``remove()``, or leaving a ``with`` block, ends them."""

    def __init__(self, handles: list[RemovableHandle]) -> None:
        self._handles = handles

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> MaskAttachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _zero_pruned_grad(pruned: Tensor) -> Callable[[Tensor], Tensor]:
    def hook(grad: Tensor) -> Tensor:
        return grad.masked_fill(pruned, 0)

    return hook


def _refill_after_step(pairs: list[tuple[Tensor, Tensor]]) -> Callable[..., None]:
    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            for param, pruned in pairs:
                param.masked_fill_(pruned, 0)

    return hook


class MaskSet(Mapping[str, Tensor]):
    """Boolean masks by tensor name: True keeps an entry, False prunes it.

    The set owns copies of the masks it is given; masks given as floats or ints must hold only 0
    and 1 and are stored as booleans.
    """

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        self._masks = {name: _as_bool(name, mask) for name, mask in masks.items()}

    @classmethod
    def ones(cls, target: Target, include_bias: bool = False) -> MaskSet:
        """Masks that keep everything, over :func:`prunable_tensors` of ``target``."""
        tensors = prunable_tensors(target, include_bias)
        return cls({n: torch.ones_like(t, dtype=torch.bool) for n, t in tensors.items()})

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self.keys() == other.keys() and all(
            torch.equal(m, other[n]) for n, m in self.items()
        )

    def __repr__(self) -> str:
        return f"MaskSet({len(self)} masks, {self.remaining()} of {self.total()} entries kept)"

    def total(self) -> int:
        """Entries under the masks."""
        return sum(m.numel() for m in self._masks.values())

    def remaining(self) -> int:
        """Entries the masks keep."""
        return sum(int(m.sum()) for m in self._masks.values())

    def density(self) -> float:
        """Fraction of all masked entries that are kept."""
        total = self.total()
        return self.remaining() / total if total else 1.0

    def densities(self) -> dict[str, float]:
        """Fraction kept of each mask."""
        return {n: int(m.sum()) / m.numel() for n, m in self._masks.items()}

    def validate(self, target: Target) -> None:
        """ValueError naming the first mask that has no tensor of its name in ``target`` or whose
        shape differs from that tensor's."""
        _check_fits(self._masks, _named(target), _what(target))

    def tensors(self, target: Target) -> dict[str, Tensor]:
        """The masked tensors of ``target`` by name, after :meth:`validate`."""
        named = _named(target)
        _check_fits(self._masks, named, _what(target))
        return {name: named[name] for name in self._masks}

    def apply(self, target: Target) -> None:
        """Set the pruned entries of ``target``'s tensors to exactly zero, in place.

        Works on a module's parameters and on views such as
        :func:`escapelab.nets.views.named_views`, which write through to theta. Entries are
        filled rather than multiplied, so an inf or nan in a pruned entry becomes 0 too.
        """
        with torch.no_grad():
            for name, t in self.tensors(target).items():
                t.masked_fill_(~self._masks[name].to(t.device), 0)

    def attach(
        self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
    ) -> MaskAttachment:
        """Keep the pruned parameters of ``model`` at exactly zero while it trains.

        Applies the masks, then zeroes the pruned entries of every gradient as it is computed
        (a tensor hook), so neither the loss nor a weight decay folded into the gradient moves
        them. Optimizer state from before pruning (Adam's moments, SGD's momentum) would still
        move them; with ``optimizer`` the masks are also re-applied after each of its steps (a
        step post-hook), which holds for any optimizer; without it, step with
        :func:`masked_step`.
        """
        params = self.tensors(model)
        self.apply(model)
        pairs = [(p, ~self._masks[n].to(p.device)) for n, p in params.items()]
        handles = [p.register_hook(_zero_pruned_grad(pruned)) for p, pruned in pairs]
        if optimizer is not None:
            handles.append(optimizer.register_step_post_hook(_refill_after_step(pairs)))
        return MaskAttachment(handles)

    def sparsity_report(self, target: Target) -> SparsityReport:
        """Per masked tensor: shape, entries, entries kept, density and nonzero entries now."""
        rows = []
        for name, t in self.tensors(target).items():
            kept = int(self._masks[name].sum())
            rows.append(
                LayerSparsity(
                    name=name,
                    shape=tuple(t.shape),
                    total=t.numel(),
                    remaining=kept,
                    density=kept / t.numel() if t.numel() else 1.0,
                    nonzero=int(torch.count_nonzero(t.detach())),
                )
            )
        total = sum(r.total for r in rows)
        remaining = sum(r.remaining for r in rows)
        return SparsityReport(tuple(rows), total, remaining, remaining / total if total else 1.0)

    def save(self, path: str | Path) -> None:
        """Write the masks to ``path`` as plain tensors (see the module notes on formats)."""
        write_tensors(self._masks, path)

    @classmethod
    def load(cls, path: str | Path, target: Target | None = None) -> MaskSet:
        """Masks written by :meth:`save`; with ``target``, ValueError unless they fit it."""
        masks = cls(read_tensors(path))
        if target is not None:
            masks.validate(target)
        return masks


def masked_step(
    optimizer: torch.optim.Optimizer,
    masks: MaskSet,
    model: nn.Module,
    closure: Callable[[], Any] | None = None,
) -> Any:
    """``optimizer.step(closure)`` followed by ``masks.apply(model)``; returns the step's value."""
    loss = optimizer.step(closure)
    masks.apply(model)
    return loss


def _safetensors() -> ModuleType | None:
    """The ``safetensors`` package (with its torch module loaded) when installed."""
    try:
        importlib.import_module("safetensors.torch")
    except ImportError:
        return None
    return importlib.import_module("safetensors")


def write_tensors(tensors: Mapping[str, Tensor], path: str | Path) -> None:
    """Write compact CPU copies (a view would otherwise save its whole storage).

    safetensors sorts its entries, so their order is kept in the file's metadata.
    """
    plain = {
        name: t.detach().cpu().clone(memory_format=torch.contiguous_format)
        for name, t in tensors.items()
    }
    st = _safetensors()
    if st is not None:
        st.torch.save_file(plain, str(path), metadata={_ORDER_KEY: json.dumps(list(plain))})
    else:
        torch.save(plain, path)


def _read_safetensors(st: ModuleType, path: Path) -> dict[str, Tensor]:
    try:
        with st.safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            order = json.loads((f.metadata() or {}).get(_ORDER_KEY, "null"))
            if isinstance(order, list) and sorted(order) == sorted(names):
                names = order
            return {name: f.get_tensor(name) for name in names}
    except (st.SafetensorError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is neither a torch.save archive nor a safetensors file") from err


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Names -> tensors, in the order written, from a file of :func:`write_tensors`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if zipfile.is_zipfile(path):
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{path} holds objects other than tensors; refusing to load it"
            ) from err
    else:
        st = _safetensors()
        if st is None:
            raise ValueError(
                f"{path} is not a torch.save archive; reading it as safetensors needs the "
                "safetensors package"
            )
        content = _read_safetensors(st, path)
    if not isinstance(content, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in content.items()
    ):
        raise ValueError(f"{path} does not hold a mapping of names to tensors")
    return content


def save_checkpoint(model: nn.Module, masks: MaskSet, path: str | Path) -> None:
    """Write ``model.state_dict()`` and ``masks`` to one file of plain tensors."""
    masks.validate(model)
    tensors = {_MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    tensors.update({_MASK_PREFIX + k: v for k, v in masks.items()})
    write_tensors(tensors, path)


def load_checkpoint(model: nn.Module, path: str | Path) -> MaskSet:
    """Load a :func:`save_checkpoint` file into ``model`` and return its masks.

    Everything is checked before anything is loaded: ValueError when the file's state has
    entries the model lacks or lacks entries it has, when a shape differs, or when a mask does
    not fit the model's parameters. The masks are returned, not applied.
    """
    tensors = read_tensors(path)
    foreign = [k for k in tensors if not k.startswith((_MODEL_PREFIX, _MASK_PREFIX))]
    if foreign:
        raise ValueError(f"{path} is not a checkpoint: unexpected entries {_listing(foreign)}")
    state = {
        k.removeprefix(_MODEL_PREFIX): v for k, v in tensors.items() if k.startswith(_MODEL_PREFIX)
    }
    masks = MaskSet(
        {k.removeprefix(_MASK_PREFIX): v for k, v in tensors.items() if k.startswith(_MASK_PREFIX)}
    )
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit the model: missing {_listing(missing) or 'none'}, "
            f"unexpected {_listing(unexpected) or 'none'}"
        )
    mismatched = [
        f"{name!r} {tuple(state[name].shape)} (model: {tuple(t.shape)})"
        for name, t in expected.items()
        if state[name].shape != t.shape
    ]
    if mismatched:
        raise ValueError(f"checkpoint {path} has other shapes: {', '.join(mismatched)}")
    masks.validate(model)
    model.load_state_dict(state)
    return masks
