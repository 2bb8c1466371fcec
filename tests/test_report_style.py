"""The one figure style: pyplot-free figures, the Okabe–Ito palette, finish(), and that importing
escapelab neither loads pyplot nor touches matplotlib's backend; every figure function writes a
PNG of the expected pixel size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex

import escapelab
from escapelab.landscape.classify import CLASSES
from escapelab.report import figures, style, ticket_figures
from escapelab.report.style import (
    B_COLORS,
    CLASS_COLORS,
    CONTINGENCY_COLORS,
    NEUTRAL,
    OKABE_ITO,
    ROLE_COLORS,
    SERIES_COLORS,
    finish,
    new_figure,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_palette_is_okabe_ito_and_every_map_draws_from_it() -> None:
    assert OKABE_ITO == {
        "black": "#000000",
        "orange": "#E69F00",
        "sky_blue": "#56B4E9",
        "bluish_green": "#009E73",
        "yellow": "#F0E442",
        "blue": "#0072B2",
        "vermillion": "#D55E00",
        "reddish_purple": "#CC79A7",
    }
    allowed = {*OKABE_ITO.values(), NEUTRAL}
    assert sorted(SERIES_COLORS) == sorted(OKABE_ITO.values())
    assert set(CLASS_COLORS) == set(CLASSES)
    for mapping in (CLASS_COLORS, B_COLORS, CONTINGENCY_COLORS, ROLE_COLORS):
        assert set(mapping.values()) <= allowed
        # one colour per category within a figure
        assert len(set(mapping.values())) == len(mapping)
    assert style.series_color(0) == SERIES_COLORS[0]
    assert style.series_color(len(SERIES_COLORS) + 2) == SERIES_COLORS[2]
    ordered = style.ordered_colors(4)
    assert len(ordered) == 4 and len({to_hex(c) for c in ordered}) == 4


def test_new_figure_shapes_and_colour_cycle() -> None:
    fig, ax = new_figure()
    assert tuple(fig.get_size_inches()) == pytest.approx(style.FIGSIZE)
    (line,) = ax.plot([0, 1], [0, 1])
    assert to_hex(line.get_color()) == SERIES_COLORS[0].lower()
    fig, axes = new_figure(2, 3, figsize=(9, 5), sharey="row")
    assert isinstance(axes, np.ndarray) and axes.shape == (2, 3)
    assert axes[0, 0].get_shared_y_axes().joined(axes[0, 0], axes[0, 2])
    assert not axes[0, 0].get_shared_y_axes().joined(axes[0, 0], axes[1, 0])


def test_finish_titles_legend_and_png(tmp_path: Path) -> None:
    fig, ax = new_figure(figsize=(4.0, 3.0))
    ax.plot([1, 2, 3], [3, 1, 2], label="series")
    out = finish(fig, ax, str(tmp_path / "a" / "b" / "one.png"), title="T", dpi=50)
    assert out == tmp_path / "a" / "b" / "one.png" and isinstance(out, Path)
    assert png_size(out) == (200, 150)
    assert ax.get_title() == "T"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["series"]

    fig, (left, right) = new_figure(1, 2, figsize=(6.0, 3.0))
    right.plot([0, 1], [1, 0], label="right only")
    out = finish(fig, (left, right), tmp_path / "two.png", title="S", legend_kw={"ncols": 1})
    assert png_size(out) == (6 * style.DPI, 3 * style.DPI)
    assert fig.get_suptitle() == "S" and left.get_title() == ""
    assert left.get_legend() is None and right.get_legend() is not None

    fig, ax = new_figure(figsize=(2.0, 2.0))
    ax.plot([0, 1], [0, 1], label="x")
    finish(fig, ax, tmp_path / "none.png", legend_loc=None, dpi=40)
    assert ax.get_legend() is None and ax.get_title() == ""
    with pytest.raises(TypeError):
        finish(fig, 3, tmp_path / "bad.png")


ISOLATION_SCRIPT = r"""
import importlib, json, pkgutil, sys
import escapelab.theory
for info in pkgutil.walk_packages(escapelab.theory.__path__, "escapelab.theory."):
    importlib.import_module(info.name)
theory_loads_matplotlib = any(m.split(".")[0] == "matplotlib" for m in sys.modules)
import matplotlib
raw = dict.__getitem__(matplotlib.rcParams, "backend")
names = [info.name for info in pkgutil.walk_packages(escapelab.__path__, "escapelab.")]
for name in names:
    importlib.import_module(name)
result = {
    "names": names,
    "imported": [n for n in names if n in sys.modules],
    "theory_loads_matplotlib": theory_loads_matplotlib,
    "pyplot": "matplotlib.pyplot" in sys.modules,
    "raw_backend_unchanged": dict.__getitem__(matplotlib.rcParams, "backend") is raw,
}
result["backend"] = matplotlib.get_backend()  # may resolve the backend: last
print(json.dumps(result))
"""


@pytest.mark.parametrize("mpl_backend", [None, "svg"])
def test_importing_every_module_leaves_pyplot_and_the_backend_alone(
    mpl_backend: str | None,
) -> None:
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    if mpl_backend:  # a chosen non-default backend must survive importing escapelab
        env["MPLBACKEND"] = mpl_backend
    src = str(Path(escapelab.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])

    def python(code: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    fresh = python("import matplotlib; print(matplotlib.get_backend())")
    result = json.loads(python(ISOLATION_SCRIPT))
    for name in (
        "escapelab.cli",
        "escapelab.report.counts",
        "escapelab.report.figures",
        "escapelab.report.geometry_figures",
        "escapelab.report.style",
        "escapelab.report.ticket_figures",
        "escapelab.theory.symmetry_counts",
    ):
        assert name in result["imported"]
    assert result["imported"] == result["names"]
    assert result["theory_loads_matplotlib"] is False
    assert result["pyplot"] is False
    assert result["raw_backend_unchanged"] is True
    assert result["backend"] == fresh
    if mpl_backend:
        assert fresh.lower() == mpl_backend


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Record the (figure, axes) each figure function hands to finish()."""
    seen: list[tuple[Any, Any]] = []

    def spy(fig: Any, ax_or_axes: Any, path: Any, **kwargs: Any) -> Path:
        seen.append((fig, ax_or_axes))
        return finish(fig, ax_or_axes, path, **kwargs)

    monkeypatch.setattr(figures, "finish", spy)
    monkeypatch.setattr(ticket_figures, "finish", spy)
    return seen


def escape_runs() -> list[dict[str, Any]]:
    curve = {"curve_steps": [0, 10, 20, 30], "source_loss": 2.0}
    return [
        {"escaped": False, "loss_curve": [2.0, 1.9, 1.95, 2.0], **curve},
        {"escaped": False, "loss_curve": [2.0, 2.0, 2.0, 2.0], **curve},
        {"escaped": True, "loss_curve": [2.0, 1.0, 0.1, 1e-4], **curve},
        {"escaped": True, "loss_curve": [], **curve},
    ]


def test_escape_curves_colour_stayed_and_escaped_apart(
    tmp_path: Path, captured: list[tuple[Any, Any]]
) -> None:
    out = figures.plot_escape_curves(escape_runs(), tmp_path / "escape.png", "escape")
    assert png_size(out) == (832, 546)  # 6.4 x 4.2 in at 130 dpi
    ((_, ax),) = captured
    colours = {}
    for line in ax.get_lines():
        label = line.get_label()
        if not label.startswith("_"):
            colours[label] = to_hex(line.get_color())
    assert set(colours) == {"stayed (2)", "escaped (1)"}
    assert colours["stayed (2)"] == OKABE_ITO["blue"].lower()
    assert colours["escaped (1)"] == OKABE_ITO["vermillion"].lower()
    assert ax.get_title() == "escape" and ax.get_yscale() == "log"


def test_every_experiment_figure_writes_a_png(
    tmp_path: Path, captured: list[tuple[Any, Any]]
) -> None:
    sweep_rows = [
        {
            "width": w,
            "p_global": p,
            "ci_low": max(p - 0.2, 0.0),
            "ci_high": min(p + 0.2, 1.0),
            "pred_subsets": p,
            "pred_disjoint": p / 2,
        }
        for w, p in ((2, 0.1), (3, 0.4), (5, 0.9))
    ]
    records = [
        {"width": w, "kind": kind, "loss": 10.0 ** -(k + 1), "member": k}
        for k, (w, kind) in enumerate(zip((2, 3, 5, 5, 3), CLASSES, strict=False))
    ]
    cells = tuple(CONTINGENCY_COLORS)
    contingency = [
        {
            "width": 3,
            "n": 10,
            "subsets_sampled": False,
            **dict(zip(cells, (4, 1, 2, 3), strict=True)),
        },
        {
            "width": 4,
            "n": 10,
            "subsets_sampled": True,
            **dict(zip(cells, (6, 2, 1, 1), strict=True)),
        },
    ]
    split = [
        {
            "embedding": "split",
            "member": 0,
            "unit": 0,
            "gamma": g,
            "b_class": b,
            "predicted_saddle": b == "indefinite",
            "embedded_n_negative": int(g > 0.5),
            "embedded_eig_min": -0.1 if g > 0.5 else 0.2,
        }
        for g, b in ((-0.5, "positive"), (0.5, "indefinite"), (0.75, "indefinite"))
    ]
    basins = [
        {
            "width": 3,
            "minima_losses": [0.1, 0.01],
            "basin_shares": [0.3, 0.2],
            "distinct_bad_minima": 2,
        },
        {"width": 4, "minima_losses": [], "basin_shares": [], "distinct_bad_minima": 0},
    ]
    points = [{"n_params": p, "index": i} for p, i in ((10, 0), (10, 1), (20, 1), (20, 2))]
    paths = [
        figures.plot_success_vs_width(sweep_rows, 2, tmp_path / "p.png", "t"),
        figures.plot_loss_by_width(records, tmp_path / "l.png", "t"),
        figures.plot_contingency(contingency, cells, tmp_path / "c.png", "t"),
        figures.plot_split_spectrum(split, tmp_path / "s.png", "t"),
        figures.plot_minima_basins(basins, tmp_path / "b.png", "t"),
        figures.plot_index_distribution(points, tmp_path / "i.png", "t"),
    ]
    for path in paths:
        assert png_size(path) == (832, 546)
        assert path.stat().st_size > 5_000
    # colours of named categories come from the style's maps
    loss_ax = captured[1][1]
    dots = {c.get_label().split(" ")[0]: to_hex(c.get_facecolor()[0]) for c in loss_ax.collections}
    assert dots == {cls: CLASS_COLORS[cls].lower() for cls in CLASSES[:5]}
    bar_ax = captured[2][1]
    bar_colours = [to_hex(p.get_facecolor()) for p in bar_ax.patches[::2]]
    assert bar_colours == [CONTINGENCY_COLORS[c].lower() for c in cells]


def lottery_rows(regression: bool) -> list[dict[str, Any]]:
    rows = []
    for role in ROLE_COLORS:
        for level, density in enumerate((1.0, 0.5, 0.2, 0.05)):
            acc = float("nan") if regression else 0.9 - 0.1 * level
            loss = 0.1 * (level + 1)
            rows.append(
                {
                    "role": role,
                    "prune_level": level,
                    "density": density,
                    "test_acc_es": acc,
                    "test_acc_es_min": acc - 0.02,
                    "test_acc_es_max": acc + 0.02,
                    "test_loss_es": loss,
                    "test_loss_es_min": loss / 2,
                    "test_loss_es_max": loss * 2,
                    "es_step": 100 + 10 * level,
                    "es_step_std": 5.0,
                }
            )
    return rows


@pytest.mark.parametrize("regression", [False, True])
def test_lottery_figure(tmp_path: Path, captured: list[tuple[Any, Any]], regression: bool) -> None:
    out = ticket_figures.plot_lottery(lottery_rows(regression), tmp_path / "lot.png", "IMP")
    assert png_size(out) == (11 * style.DPI, round(4.2 * style.DPI))
    ((fig, (acc_ax, es_ax)),) = captured
    assert fig.get_suptitle() == "IMP"
    assert acc_ax.get_legend() is not None and es_ax.get_legend() is None
    assert acc_ax.get_yscale() == ("log" if regression else "linear")
    legend = {t.get_text() for t in acc_ax.get_legend().get_texts()}
    assert legend == {*ticket_figures.ROLE_LABELS.values(), "dense"}
    colours = {
        to_hex(line.get_color()) for line in acc_ax.get_lines() if line.get_label() != "dense"
    }
    assert colours == {c.lower() for c in ROLE_COLORS.values()}


def test_perturbation_figure(tmp_path: Path, captured: list[tuple[Any, Any]]) -> None:
    rows = []
    for kind_of_ticket, problem in (("weight", "digits"), ("neuron", "teacher")):
        for kind, size in (("scale", 0.5), ("scale", 1.0), ("noise", 0.1), ("none", 0.0)):
            rows.append(
                {
                    "ticket_kind": kind_of_ticket,
                    "problem": problem,
                    "perturbation": kind,
                    "size": size,
                    "failure_rate": 0.25,
                    "ci_low": 0.1,
                    "ci_high": 0.5,
                    "mean_overlap": 0.6,
                    "chance_overlap": 0.2,
                }
            )
    out = ticket_figures.plot_perturbation(rows, tmp_path / "pert.png")
    assert png_size(out) == (13 * style.DPI, 7 * style.DPI)
    ((fig, axes),) = captured
    assert fig.get_suptitle().startswith("E3:")
    legend = axes[0, 0].get_legend()
    assert {t.get_text() for t in legend.get_texts()} == {"weight: digits", "neuron: teacher"}
    overlap = [to_hex(line.get_color()) for line in axes[1, 0].get_lines()[:1]]
    assert overlap == [SERIES_COLORS[0].lower()]


def raw_rc_params() -> dict[str, Any]:
    """rcParams as stored; plain indexing of "backend" could resolve (and import) a backend."""
    return {key: dict.__getitem__(matplotlib.rcParams, key) for key in matplotlib.rcParams}


def test_drawing_leaves_rc_params_alone(tmp_path: Path) -> None:
    before = raw_rc_params()
    figures.plot_escape_curves(escape_runs(), tmp_path / "e.png", "e")
    ticket_figures.plot_lottery(lottery_rows(False), tmp_path / "l.png", "l")
    assert raw_rc_params() == before
