"""Landscape figures for stored teacher-student endpoints: where they explain a result.

From the endpoints a run stored (width-sweep records, minima-census ``endpoint`` records: each
keeps its weights ``theta``), for one bad local minimum of width r:

* the exact Hessian spectrum at the bad minimum, at a saddle of the same width when one was
  found, and at the bad minimum split one unit wider (γ = 1/2, Fukumizu & Amari 2000), on a
  symmetric-log axis, so the smallest eigenvalues show: the split point's negative ones are the
  escape dimensions;
* the 1-D loss slice through the split point along its most negative eigenvector (the escape
  direction);
* the linear interpolation from the bad minimum to a global minimum of the same width and
  teacher, when the run found one.

For a lottery run, whose networks live in its IMP checkpoints rather than in its records
(:mod:`escapelab.report.ticket_interpolation`): per dataset, the test loss and accuracy on the
straight line from the dense trained network (t = 0) to a trained ticket of the same
initialization (t = 1), with the barrier.

``escapelab landscape HASH`` draws them for a user's own stored run; the run pages of
``escapelab report`` include them for width-sweep and minima-census runs with a bad minimum and
for lottery runs with a finished pruning level (:func:`stored_landscape_figures`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from escapelab.experiments.kits.teacher_student import (
    for_teacher,
    objective_for,
    record_teacher,
    student_arch,
)
from escapelab.landscape.geometry import Interpolation, Slice1D, interpolate, slice_1d
from escapelab.nets.surgery import split_unit
from escapelab.runner.store import Store

ENDPOINT_EXPERIMENTS = ("width-sweep", "minima-census")
"""Experiments whose records keep the endpoints' weights."""
LANDSCAPE_EXPERIMENTS = (*ENDPOINT_EXPERIMENTS, "lottery")
"""Experiments ``escapelab landscape`` and the run pages draw landscape figures for."""


@dataclass(frozen=True)
class LandscapeViews:
    """What :func:`landscape_views` computed around one bad minimum: the Hessian spectra by
    label, the slice along the escape direction, the interpolation to a global minimum (None
    when the run found none at that width), and the record of the bad minimum."""

    spectra: dict[str, torch.Tensor]
    escape_slice: Slice1D
    interpolation: Interpolation | None
    source: dict[str, Any]


def _endpoints(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "theta" in r and r.get("role", "endpoint") == "endpoint"]


def landscape_views(
    spec: Any, records: list[dict[str, Any]], member: int | None = None
) -> LandscapeViews | None:
    """The views around the bad minimum of ``member`` (default: the first bad minimum stored,
    narrowest width first); None when the run stored no bad minimum. ValueError when ``member``
    names no bad minimum."""
    ends = _endpoints(records)
    bad = sorted(
        (r for r in ends if r["kind"] == "local_min"), key=lambda r: (r["width"], r["member"])
    )
    if member is not None:
        bad = [r for r in bad if r["member"] == member]
        if not bad:
            raise ValueError(f"--member: member {member} is not a stored bad local minimum")
    if not bad:
        return None
    source = bad[0]
    teacher = record_teacher(spec, source)
    one = for_teacher(spec, teacher - spec.teacher.seed)
    same = [r for r in ends if r["width"] == source["width"] and record_teacher(spec, r) == teacher]
    arch = student_arch(one.teacher, source["width"], one.student.bias)
    objective = objective_for(one, arch, torch.device("cpu"))
    theta = torch.tensor(source["theta"], dtype=torch.float64)
    spectra = {f"bad minimum, m = {source['width']}": _eigs(objective, theta)}
    saddle = next((r for r in same if r["kind"] == "saddle"), None)
    if saddle is not None:
        spectra[f"saddle, m = {source['width']}"] = _eigs(
            objective, torch.tensor(saddle["theta"], dtype=torch.float64)
        )
    wide, wide_theta, unit = _most_negative_split(one, arch, theta)
    wide_objective = objective_for(one, wide, torch.device("cpu"))
    eigs, vecs = torch.linalg.eigh(wide_objective.hessian(wide_theta[None])[0])
    spectra[f"split one unit wider (unit {unit}, γ = 1/2), m = {source['width'] + 1}"] = eigs
    escape_slice = slice_1d(
        wide_objective, wide_theta, vecs[:, 0], alpha=torch.linspace(-1.0, 1.0, 41)
    )
    best = min(
        (r for r in same if r["kind"] == "global_min"), key=lambda r: r["loss"], default=None
    )
    path = None
    if best is not None:
        other = torch.tensor(best["theta"], dtype=torch.float64)
        path = interpolate(objective, theta, other, t=torch.linspace(-0.25, 1.25, 61))
    return LandscapeViews(spectra, escape_slice, path, source)


def _eigs(objective: Any, theta: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(objective.hessian(theta[None])[0])


def _most_negative_split(
    spec: Any, arch: Any, theta: torch.Tensor
) -> tuple[Any, torch.Tensor, int]:
    """The split (γ = 1/2) of the unit whose embedding has the most negative Hessian
    eigenvalue: (wide architecture, wide weights, unit)."""
    best = None
    for unit in range(arch.widths[0]):
        wide, wide_theta = split_unit(arch, theta[None], unit, 0.5)
        low = float(_eigs(objective_for(spec, wide, torch.device("cpu")), wide_theta[0])[0])
        if best is None or low < best[0]:
            best = (low, wide, wide_theta[0], unit)
    assert best is not None
    return best[1], best[2], best[3]


def landscape_figures(
    spec: Any, records: list[dict[str, Any]], out_dir: Path, member: int | None = None
) -> list[Path]:
    """Draw :func:`landscape_views` into ``out_dir``: landscape_spectra.png,
    landscape_escape_slice.png and, with a global minimum, landscape_interpolation.png; [] when
    the run stored no bad minimum."""
    from escapelab.report.geometry_figures import (
        plot_interpolation,
        plot_slice_1d,
        plot_spectra,
    )

    views = landscape_views(spec, records, member)
    if views is None:
        return []
    src = views.source
    where = f"member {src['member']}, m = {src['width']}, teacher {record_teacher(spec, src)}"
    paths = [
        plot_spectra(
            views.spectra, out_dir / "landscape_spectra.png", f"Hessian spectra ({where})"
        ),
        plot_slice_1d(
            views.escape_slice,
            out_dir / "landscape_escape_slice.png",
            f"bad minimum split one unit wider, along its escape direction\n{where}",
        ),
    ]
    if views.interpolation is not None:
        paths.append(
            plot_interpolation(
                views.interpolation,
                out_dir / "landscape_interpolation.png",
                f"from the bad minimum (t = 0) to a global minimum (t = 1)\n{where}",
            )
        )
    return paths


def lottery_landscape_figures(
    store: Store,
    spec_hash: str,
    spec: Any,
    records: list[dict[str, Any]],
    out_dir: Path,
    member: int | None = None,
    level: int | None = None,
) -> list[Path]:
    """Per dataset of a lottery run, ticket_interpolation_<dataset>.png: the path from the dense
    network of ``member`` (default 0) to its ticket at ``level`` (default: see
    :func:`~escapelab.report.ticket_interpolation.choose_level`), read from the run's checkpoints;
    datasets whose member has no finished pruning level are left out."""
    from escapelab.report.ticket_figures import plot_ticket_interpolation
    from escapelab.report.ticket_interpolation import load_ticket_pair, ticket_interpolation

    member = 0 if member is None else member
    paths = []
    for dataset in spec.data.datasets:
        dense = next(
            (
                r
                for r in records
                if r["dataset"] == dataset and r["member"] == member and r["prune_level"] == 0
            ),
            None,
        )
        if dense is None:
            if member not in {r["member"] for r in records}:
                raise ValueError(f"--member: this run stored no network {member}")
            continue
        done = {r["prune_level"] for r in records if r["task"] == dense["task"]}
        if len(done) < 2:
            continue
        where = store.checkpoint_dir(spec_hash, dense["task"])
        pair = load_ticket_pair(spec, dataset, member, where, level)
        paths.append(
            plot_ticket_interpolation(
                ticket_interpolation(pair),
                pair,
                out_dir / f"ticket_interpolation_{dataset}.png",
                f"{dataset}, member {member}: dense (t = 0) to its ticket at level {pair.level} "
                f"({100 * pair.ticket_record['density']:.3g} % of weights) (t = 1)",
            )
        )
    return paths


def stored_landscape_figures(
    store: Store,
    name: str,
    spec_hash: str,
    spec: Any,
    out_dir: Path,
    member: int | None = None,
    level: int | None = None,
) -> list[Path]:
    """The landscape figures of run ``spec_hash`` of experiment ``name`` (one of
    :data:`LANDSCAPE_EXPERIMENTS`): :func:`landscape_figures` for stored endpoints,
    :func:`lottery_landscape_figures` for a lottery run; [] when there is nothing to draw.
    ``level`` is only for lottery runs."""
    records = store.records(spec_hash)
    if not records:
        return []
    if name == "lottery":
        return lottery_landscape_figures(store, spec_hash, spec, records, out_dir, member, level)
    if level is not None:
        raise ValueError(f"--level: only for lottery runs, this is a {name} run")
    return landscape_figures(spec, records, out_dir, member)


__all__ = [
    "ENDPOINT_EXPERIMENTS",
    "LANDSCAPE_EXPERIMENTS",
    "LandscapeViews",
    "landscape_figures",
    "landscape_views",
    "lottery_landscape_figures",
    "stored_landscape_figures",
]
