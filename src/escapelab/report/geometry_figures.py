"""Figures of loss-landscape geometry (:mod:`escapelab.landscape.geometry`).

Each function takes a result dataclass and an output path, writes a PNG (creating the folder)
and returns the path; styling comes from :mod:`escapelab.report.style`. Loss axes and colours
switch to a log scale by themselves when the positive losses span two decades or more
(``log=None``); pass ``log`` to force either.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import LogLocator, MaxNLocator

from escapelab.landscape.geometry import Interpolation, Slice1D, Slice2D
from escapelab.report.style import (
    ACCURACY_COLOR,
    HIGHLIGHT_COLOR,
    LOSS_COLOR,
    SEQUENTIAL_CMAP,
    finish,
    new_figure,
)

DECADES_FOR_LOG = 2.0


def plot_interpolation(
    result: Interpolation, path: Path | str, title: str | None = None, log: bool | None = None
) -> Path:
    """Loss vs t along the linear path, the chord between the endpoints, and the barrier.

    Extrapolated parts (t outside [0, 1]) are shaded; an accuracy, when present, is drawn
    against a right-hand axis.
    """
    t, loss = result.t.numpy(), result.loss.numpy()
    fig, ax = new_figure()
    for lo, hi in ((float(t.min()), 0.0), (1.0, float(t.max()))):
        if hi > lo:
            ax.axvspan(lo, hi, color="0.93", zorder=0)
    ax.plot(t, loss, "-", color=LOSS_COLOR, lw=1.6, marker=".", ms=4, label="loss")
    chord_t = np.linspace(0.0, 1.0, 101)
    chord = (1.0 - chord_t) * result.loss_a + chord_t * result.loss_b
    chord_label = r"chord $(1-t)L(\theta_a) + tL(\theta_b)$"
    ax.plot(chord_t, chord, "--", color="0.45", lw=1.0, label=chord_label)
    ax.plot([0.0, 1.0], [result.loss_a, result.loss_b], "o", color="k", ms=7, zorder=5)
    for t_end, value, name in ((0.0, result.loss_a, "a"), (1.0, result.loss_b, "b")):
        offset = {"xytext": (0, 9), "textcoords": "offset points", "ha": "center"}
        ax.annotate(rf"$\theta_{name}$", (t_end, value), fontsize=11, **offset)
    label = f"barrier = {result.barrier:.3g}"
    if result.barrier > 0:
        base = (1.0 - result.barrier_t) * result.loss_a + result.barrier_t * result.loss_b
        ax.annotate(
            "",
            xy=(result.barrier_t, base + result.barrier),
            xytext=(result.barrier_t, base),
            arrowprops={"arrowstyle": "<->", "color": HIGHLIGHT_COLOR, "lw": 1.4},
        )
        label += f" at $t$ = {result.barrier_t:.3g}"
    ax.plot([], [], color=HIGHLIGHT_COLOR, lw=1.4, label=label)
    _loss_scale(ax, [*loss, result.loss_a, result.loss_b], log)
    ax.set_xlabel(r"interpolation coefficient $t$   ($\theta(t) = (1-t)\theta_a + t\theta_b$)")
    ax.set_ylabel("loss")
    _accuracy_axis(ax, t, result.accuracy)
    default_title = r"Linear interpolation between $\theta_a$ and $\theta_b$"
    return finish(fig, ax, path, title=title or default_title)


def plot_slice_1d(
    result: Slice1D, path: Path | str, title: str | None = None, log: bool | None = None
) -> Path:
    """Loss vs alpha along one direction through theta, with theta (alpha = 0) marked."""
    alpha, loss = result.alpha.numpy(), result.loss.numpy()
    fig, ax = new_figure()
    ax.plot(alpha, loss, "-", color=LOSS_COLOR, lw=1.6, marker=".", ms=4, label="loss")
    center = f"θ  (L = {result.center_loss:.3g})"
    ax.plot([0.0], [result.center_loss], "*", color="k", ms=12, zorder=5, label=center)
    _loss_scale(ax, [*loss, result.center_loss], log)
    ax.set_xlabel(f"α  along {_direction_kind(result.normalized)} δ   (θ + αδ)")
    ax.set_ylabel("loss")
    _accuracy_axis(ax, alpha, result.accuracy)
    return finish(fig, ax, path, title=title or "1-D loss slice through θ")


def plot_slice_2d(
    result: Slice2D,
    path: Path | str,
    title: str | None = None,
    log: bool | None = None,
    levels: int = 30,
) -> Path:
    """Filled contours of the loss on the (alpha, beta) plane through theta, theta marked."""
    alpha, beta = result.alpha.numpy(), result.beta.numpy()
    z = np.ma.masked_invalid(result.loss.numpy().T)  # rows follow beta (y), columns alpha (x)
    fig, ax = new_figure(figsize=(6.0, 5.0))
    use_log = _spans_decades(z.compressed(), allow_zero=True) if log is None else log
    if use_log:
        lo = float(z[z > 0].min())
        hi = float(z.max())
        bounds = np.geomspace(lo, hi * (1 + 1e-9), levels + 1)
        cs = ax.contourf(
            alpha,
            beta,
            np.ma.clip(z, lo, hi),
            levels=bounds,
            norm=LogNorm(lo, hi),
            cmap=SEQUENTIAL_CMAP,
        )
    else:
        lo, hi = float(z.min()), float(z.max())
        if hi <= lo:
            hi = lo + max(abs(lo), 1.0) * 1e-6
        bounds = MaxNLocator(levels).tick_values(lo, hi)
        cs = ax.contourf(alpha, beta, z, levels=bounds, cmap=SEQUENTIAL_CMAP)
    ax.contour(alpha, beta, z, levels=bounds[::5], colors="white", linewidths=0.4, alpha=0.6)
    cbar = fig.colorbar(cs, ax=ax)
    if use_log:
        cbar.locator = LogLocator()
        cbar.update_ticks()
    cbar.set_label("loss (log scale)" if use_log else "loss")
    center = f"θ  (L = {result.center_loss:.3g})"
    ax.plot([0.0], [0.0], "*", color="white", mec="k", ms=14, label=center)
    kind = _direction_kind(result.normalized)
    ax.set_xlabel(f"α  along {kind} δ")
    ax.set_ylabel(f"β  along {kind} η")
    ax.set_aspect("auto")
    return finish(fig, ax, path, title=title or "2-D loss slice θ + αδ + βη")


def plot_spectra(spectra: dict[str, Any], path: Path | str, title: str | None = None) -> Path:
    """Hessian eigenvalues in ascending order, one series per label, on a symmetric-log axis
    (linear within 1e-8 of zero) so that the smallest eigenvalues, and their sign, show."""
    fig, ax = new_figure()
    low = 0.0
    for label, eigs in spectra.items():
        values = np.sort(np.asarray(eigs, dtype=float))
        low = min(low, float(values[0]))
        ax.plot(range(1, len(values) + 1), values, "o-", ms=4, lw=1, label=label)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=1e-8)
    ax.set_xlabel("eigenvalue index (ascending)")
    ax.set_ylabel("Hessian eigenvalue")
    return finish(fig, ax, path, title=title or "Hessian spectra", legend_loc="lower right")


def _direction_kind(normalized: bool) -> str:
    return "filter-normalised direction" if normalized else "direction"


def _spans_decades(values: Any, allow_zero: bool = False) -> bool:
    """True when the finite values are >= 0 (> 0 unless ``allow_zero``) and the positive ones
    span DECADES_FOR_LOG decades or more."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() < 0 or (v.min() == 0 and not allow_zero):
        return False
    pos = v[v > 0]
    return pos.size > 1 and math.log10(pos.max() / pos.min()) >= DECADES_FOR_LOG


def _loss_scale(ax: Any, values: list[float], log: bool | None) -> None:
    if _spans_decades(values) if log is None else log:
        ax.set_yscale("log")


def _accuracy_axis(ax: Any, x: np.ndarray, accuracy: Any) -> None:
    """Accuracy on a right-hand axis in the accent colour, when there is one."""
    if accuracy is None:
        return
    ax2 = ax.twinx()
    ax2.plot(x, accuracy.numpy(), ":", color=ACCURACY_COLOR, lw=1.6)
    ax2.set_ylabel("accuracy", color=ACCURACY_COLOR)
    ax2.tick_params(axis="y", colors=ACCURACY_COLOR)
    ax.plot([], [], ":", color=ACCURACY_COLOR, lw=1.6, label="accuracy (right axis)")
