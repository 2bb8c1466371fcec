"""Perturbing everything but a ticket: the E3 test of whether winning tickets keep winning.

A ticket is a boolean ``keep`` mask over a network's initial weights (the weights of a
weight-level IMP ticket, or all incoming and outgoing weights of a neuron-level ticket's units).
The rest of the network is changed at initialization in one of three ways, each defined through
an independent fresh draw ``fresh`` from the same initializer (so sizes are in units of the
initialization's own scale, whatever the layer):

* ``redraw``: the rest is replaced by ``fresh`` (size is ignored; recorded as 1);
* ``scale``:  the rest is multiplied by alpha = size (0 removes it, 1 leaves it unchanged);
* ``noise``:  ``size * fresh`` is added to the rest (sigma = size, relative to the init scale).

``none`` leaves the network unchanged: the unperturbed reference run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from escapelab.config import SpecError, constraint

PERTURBATION_KINDS: tuple[str, ...] = ("none", "redraw", "scale", "noise")


@dataclass(frozen=True)
class Perturbation:
    """One perturbation of the non-ticket weights: a kind and its size (alpha or sigma)."""

    kind: str
    size: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in PERTURBATION_KINDS:
            raise ValueError(
                f"unknown perturbation {self.kind!r}; allowed: {', '.join(PERTURBATION_KINDS)}"
            )
        if not math.isfinite(self.size) or self.size < 0:
            raise ValueError(f"perturbation size must be finite and >= 0, got {self.size!r}")

    @property
    def label(self) -> str:
        """Short name for tables and legends, e.g. ``scale 2`` or ``noise 0.5``."""
        if self.kind in ("none", "redraw"):
            return self.kind
        return f"{self.kind} {self.size:g}"


def perturb_outside(theta: Tensor, keep: Tensor, fresh: Tensor, p: Perturbation) -> Tensor:
    """A new tensor equal to ``theta`` where ``keep`` is True and perturbed by ``p`` elsewhere.

    ``keep`` broadcasts against ``theta``; ``fresh`` has theta's shape (an independent draw from
    theta's initializer). ``theta`` itself is not modified.
    """
    if fresh.shape != theta.shape:
        raise ValueError(f"fresh draw has shape {tuple(fresh.shape)}, theta {tuple(theta.shape)}")
    if p.kind == "none":
        return theta.clone()
    if p.kind == "redraw":
        rest = fresh
    elif p.kind == "scale":
        rest = theta * p.size
    else:
        rest = theta + p.size * fresh
    return theta.where(keep.to(theta.device), rest)


@dataclass(frozen=True)
class PerturbationSpec:
    """Which perturbations to apply: a re-draw, scales alpha and noise sizes sigma. The
    unperturbed run is always included as the reference."""

    redraw: bool = True
    scales: tuple[float, ...] = field(
        default=(0.0, 0.5, 2.0, 4.0), metadata=constraint(ge=0, empty=True, help="alpha")
    )
    noise: tuple[float, ...] = field(
        default=(0.5, 1.0, 2.0, 4.0), metadata=constraint(ge=0, empty=True, help="sigma")
    )

    def __post_init__(self) -> None:
        for name, sizes in (("perturb.scales", self.scales), ("perturb.noise", self.noise)):
            if len(set(sizes)) != len(sizes):
                raise SpecError(name, f"sizes must be distinct, got {list(sizes)}")
            if any(not math.isfinite(s) for s in sizes):
                raise SpecError(name, f"sizes must be finite, got {list(sizes)}")

    def grid(self) -> list[Perturbation]:
        """The reference run first, then every requested perturbation."""
        return perturbation_grid(self.redraw, self.scales, self.noise)


def perturbation_grid(
    redraw: bool, scales: Sequence[float], noise: Sequence[float]
) -> list[Perturbation]:
    """``none``, then ``redraw`` (if asked), the scales and the noise sizes, in that order."""
    grid = [Perturbation("none", 0.0)]
    if redraw:
        grid.append(Perturbation("redraw", 1.0))
    grid += [Perturbation("scale", float(a)) for a in scales]
    grid += [Perturbation("noise", float(s)) for s in noise]
    return grid
