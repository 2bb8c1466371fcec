"""Deep double descent on MNIST-1D (Nakkiran et al., "Deep Double Descent", 2019).

The setting of the MNIST-1D notebook ``deep-double-descent`` (Greydanus & Kobak): an MLP
40 -> n -> n -> 10 for widths n from ``geomspace(2, 300, 20)``, the 4,000 training samples with
15 % of their labels resampled uniformly, SGD with learning rate 0.01, momentum 0.9 and batches
of 100. With label noise the test error rises to a peak near the width where the network first
fits the noisy training set (the notebook reports about 54 % at n = 47-61, and 45 % at n = 300),
then falls again; without noise it falls monotonically. ``model = cnn1d`` runs the MNIST-1D
paper's 1-D CNN with n channels instead.

One task trains every width and seed of one noise level. Widths are packed into ensembles
(:func:`pack_widths`): each narrow network is a masked member of the widest network of its pack
(:mod:`escapelab.nets.padding`), so a pack trains as one batched computation; ``packing`` is an
execution option (it cannot change a record beyond floating-point rounding). Members with and
without label noise start from the same weights and batch order (same seed and width).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from escapelab.config import SpecError, constraint
from escapelab.data.datasets import load_dataset
from escapelab.data.label_noise import resample_labels
from escapelab.experiments.base import Task, seed_tasks
from escapelab.nets.classifiers import build_model, n_parameters
from escapelab.nets.padding import embed_leading
from escapelab.nets.stacked import StackedModel
from escapelab.optim.minibatch import FitConfig, evaluate, fit
from escapelab.seeding import derive_seed

SMALL_WIDTH = 64
NOTEBOOK_WIDTHS: tuple[int, ...] = tuple(sorted({int(w) for w in np.geomspace(2, 300, 20)}))


def _notebook_fit() -> FitConfig:
    return FitConfig(
        optimizer="sgd", lr=0.01, momentum=0.9, batch_size=100, steps=4000, eval_every=200
    )


@dataclass(frozen=True)
class DoubleDescentSpec:
    """Widths x label-noise levels x seeds on MNIST-1D (train on 4,000, test on 1,000).

    The notebook trains 500 epochs (``fit.steps = 20000``); the default 4,000 steps (100
    epochs) keeps a laptop run to minutes and already shows the peak.
    """

    model: Literal["mlp", "cnn1d"] = "mlp"
    widths: tuple[int, ...] = field(
        default=NOTEBOOK_WIDTHS,
        metadata=constraint(ge=1, unordered=True, help="hidden units (mlp) or channels (cnn1d)"),
    )
    label_noise: tuple[float, ...] = field(
        default=(0.0, 0.15),
        metadata=constraint(ge=0, le=1, unordered=True, help="share of labels resampled"),
    )
    fit: FitConfig = field(default_factory=_notebook_fit)
    data_seed: int = 0
    seeds: int = field(default=1, metadata=constraint(ge=1))
    seed: int = 0
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: all seeds")
    )
    packing: Literal["buckets", "one", "separate"] = field(
        default="buckets",
        metadata=constraint(
            execution=True,
            help="buckets: widths within a factor 2 share an ensemble; one: all widths in one; "
            "separate: one width at a time",
        ),
    )

    def __post_init__(self) -> None:
        if self.fit.batch_size > 4000:
            raise SpecError(
                "fit.batch_size", f"must be <= 4000 training samples, got {self.fit.batch_size}"
            )


def pack_widths(widths: tuple[int, ...], packing: str) -> list[list[int]]:
    """Groups of widths trained as one ensemble each, widest first: ``one`` group, one group
    per width (``separate``), or ``buckets``: each group holds the widths above half its
    widest (so padding at most doubles a member's width and quadruples its cost), and every
    width up to :data:`SMALL_WIDTH` shares one group (their padded cost is below the fixed
    cost of a training step)."""
    ordered = sorted(widths, reverse=True)
    if packing == "one":
        return [ordered]
    if packing == "separate":
        return [[w] for w in ordered]
    groups: list[list[int]] = []
    for w in ordered:
        if groups and (2 * w > groups[-1][0] or groups[-1][0] <= SMALL_WIDTH):
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def _factory(spec: DoubleDescentSpec, width: int) -> torch.nn.Module:
    return build_model(spec.model, (40,), 10, hidden=(width, width), channels=width)


def member_seed(spec: DoubleDescentSpec, width: int, i: int) -> int:
    """The initialization and batch-order seed of network i of ``width``."""
    return derive_seed("double-descent", spec.seed, spec.model, width, i)


def train_widths(
    spec: DoubleDescentSpec, noise: float, lo: int, hi: int, device: torch.device
) -> list[dict[str, Any]]:
    """Train seeds lo..hi-1 of every width at label noise ``noise``; one record each."""
    from tqdm.auto import tqdm

    data = load_dataset("mnist1d", seed=spec.data_seed, val_fraction=0.0)
    noisy = resample_labels(
        data.y_train, noise, data.n_classes, derive_seed("dd-labels", spec.data_seed, noise)
    )
    train = dataclasses.replace(data, y_train=noisy).to(device)
    records = []
    for group in tqdm(pack_widths(spec.widths, spec.packing), desc=f"noise {noise}", leave=False):
        wide = StackedModel(lambda w=group[0]: _factory(spec, w), device=device)
        keys = [(w, i) for w in group for i in range(lo, hi)]
        seeds = [member_seed(spec, w, i) for w, i in keys]
        members = []
        with torch.random.fork_rng(devices=[]):
            for s, (w, _) in zip(seeds, keys, strict=True):
                torch.manual_seed(s)
                members.append({n: p.detach() for n, p in _factory(spec, w).named_parameters()})
        params, masks = embed_leading(members, wide.shapes)
        result = fit(wide, params, train, spec.fit, seeds, masks)
        tr_loss, tr_acc = evaluate(wide, result.params, train.x_train, train.y_train)
        _, clean_acc = evaluate(wide, result.params, train.x_train, data.y_train.to(device))
        for j, (w, i) in enumerate(keys):
            records.append(
                {
                    "model": spec.model,
                    "label_noise": noise,
                    "width": w,
                    "member": i,
                    "params": n_parameters(_factory(spec, w)),
                    "test_err": 1.0 - float(result.test_acc[j, -1]),
                    "test_loss": float(result.test_loss[j, -1]),
                    "train_err": 1.0 - float(tr_acc[j]),
                    "train_err_clean_labels": 1.0 - float(clean_acc[j]),
                    "train_loss": float(tr_loss[j]),
                    "diverged": bool(result.diverged[j]),
                    "eval_steps": result.eval_steps,
                    "test_err_curve": [1.0 - float(a) for a in result.test_acc[j]],
                }
            )
    return records


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, se


def double_descent_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per noise level and width: test and train error (mean, standard error over seeds);
    then per noise level the second descent's numbers.

    ``interpolation_width``: the smallest width whose train error (on its own, possibly noisy,
    labels) is below 1 %. ``dip``: the lowest test error at widths below it (all widths when
    none interpolates); ``peak``: the highest test error at wider widths than the dip, the
    double-descent peak when there is one; ``peak_over_dip`` their difference (near 0, or the
    seeds' scatter, for a monotone curve); and the test error of the widest network.
    """
    rows = []
    for noise in sorted({r["label_noise"] for r in records}):
        mine = [r for r in records if r["label_noise"] == noise]
        curve = []
        for w in sorted({r["width"] for r in mine}):
            at = [r for r in mine if r["width"] == w]
            test, test_se = _mean_se([r["test_err"] for r in at])
            row = {
                "kind": "width",
                "model": at[0]["model"],
                "label_noise": noise,
                "width": w,
                "params": at[0]["params"],
                "seeds": len(at),
                "test_err": test,
                "test_err_se": test_se,
                "train_err": statistics.fmean(r["train_err"] for r in at),
                "diverged": sum(r["diverged"] for r in at),
            }
            curve.append(row)
        rows += curve
        fitted = [r["width"] for r in curve if r["train_err"] < 0.01]
        below = [r for r in curve if not fitted or r["width"] < fitted[0]] or curve
        dip = min(below, key=lambda r: r["test_err"])
        after = [r for r in curve if r["width"] > dip["width"]]
        peak = max(after, key=lambda r: r["test_err"]) if after else dip
        rows.append(
            {
                "kind": "peak",
                "model": curve[0]["model"],
                "label_noise": noise,
                "interpolation_width": fitted[0] if fitted else None,
                "dip_width": dip["width"],
                "dip_test_err": dip["test_err"],
                "peak_width": peak["width"],
                "peak_test_err": peak["test_err"],
                "peak_over_dip": peak["test_err"] - dip["test_err"],
                "widest": curve[-1]["width"],
                "widest_test_err": curve[-1]["test_err"],
            }
        )
    return rows


class DoubleDescent:
    """The ``double-descent`` experiment (test error against width, with and without noise)."""

    name = "double-descent"
    spec_type = DoubleDescentSpec
    description = "deep double descent on MNIST-1D: test error against width, label noise on/off"

    def tasks(self, spec: DoubleDescentSpec) -> list[Task]:
        groups = [(f"noise={p:g}", {"label_noise": p}) for p in spec.label_noise]
        return seed_tasks(groups, spec.seeds, spec.seeds_per_task)

    def run_task(
        self, spec: DoubleDescentSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        p = task.params
        return train_widths(spec, p["label_noise"], p["lo"], p["hi"], device)

    def summarize(
        self, spec: DoubleDescentSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return double_descent_rows(records)

    def figures(
        self, spec: DoubleDescentSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.zoo_figures import plot_double_descent

        rows = [r for r in double_descent_rows(records) if r["kind"] == "width"]
        if not rows:
            return []
        title = (
            f"Double descent, MNIST-1D, {spec.model} (width n), SGD {spec.fit.steps} steps, "
            f"{rows[0]['seeds']} seed(s)"
        )
        return [plot_double_descent(rows, out_dir / f"double_descent_{spec.model}.png", title)]
