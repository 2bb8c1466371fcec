"""Random-feature ridge regression against its theory: when more parameters generalize better.

Simon, Karkada, Ghosh & Belkin, "More is Better in Modern Machine Learning: when Infinite
Overparameterization is Optimal and Overfitting is Obligatory" (ICLR 2024, arXiv 2311.14646)
prove three things about random-feature (RF) ridge regression, and this experiment measures them:

1. at the optimal ridge, the test risk falls monotonically with the number of features k and of
   samples n;
2. so the infinite-feature limit (kernel ridge regression) is the best model of all;
3. for tasks with power-law eigenstructure, the optimal ridge is small enough that the training
   error lies well below the test error (overfitting is obligatory).

Each task is a population "pool" (:mod:`escapelab.problems.regression_pools`: the synthetic
power-law task, MNIST-1D or digits with one-hot regression targets) and a feature map
(:mod:`escapelab.nets.random_features`: ReLU, erf or linear features of Gaussian projections).
Two sweeps run per seed: k at fixed n (``n_fixed``), where the smallest ridge shows the
double-descent peak at k = n, and n at fixed k (``k_fixed``), both with kernel ridge
regression (k = inf) beside them. Every (seed, k, n) point is solved for all ridges at once and
all seeds of a task as one batched decomposition (:class:`escapelab.optim.ridge.Spectral`).
Risks are means of the squared error summed over outputs: ``test`` over the whole pool (the
population the theory describes), ``heldout`` over the pool minus the training samples,
``val`` over ``val_size`` pool samples never trained on (used to tune the ridge per seed).

The theory task computes the kernel's eigenstructure on the pool and the eigenframework's risk
(:mod:`escapelab.theory.rf_eigenframework`) at every simulated point and along fine k and n
grids; the summary gives the relative error of simulation against theory and the three claims
with numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from escapelab.config import SpecError, constraint
from escapelab.experiments.base import Task, seed_tasks
from escapelab.nets.random_features import feature_kernel, random_features
from escapelab.optim.ridge import Spectral
from escapelab.problems.regression_pools import (
    Pool,
    dataset_pool,
    eigenstructure,
    power_law_pool,
)
from escapelab.seeding import derive_seed
from escapelab.theory.rf_eigenframework import rf_risk

DIGITS_SIZE = 1797
KERNEL = "inf"  # the k of kernel ridge regression in records and summaries


@dataclass(frozen=True)
class PowerLawSpec:
    """The synthetic task: eigenvalues ~ i^-alpha and target power ~ i^-beta over d modes."""

    d: int = field(default=1000, metadata=constraint(ge=1, help="input dimension (modes)"))
    alpha: float = field(default=1.5, metadata=constraint(gt=0, help="eigenvalue exponent"))
    beta: float = field(default=1.5, metadata=constraint(gt=0, help="target exponent"))
    noise: float = field(default=0.0, metadata=constraint(ge=0, le=1, help="label noise var."))


@dataclass(frozen=True)
class RandomFeaturesSpec:
    """Pools x feature maps; the k sweep at ``n_fixed``, the n sweep at ``k_fixed``; ridges are
    per sample (the model minimises mean squared error + ridge |a|^2), the smallest one being
    the "tiny ridge" of the double-descent curve."""

    datasets: tuple[Literal["power-law", "mnist1d", "digits"], ...] = (
        "power-law",
        "mnist1d",
        "digits",
    )
    feature_maps: tuple[Literal["relu", "erf", "linear"], ...] = ("relu",)
    power_law: PowerLawSpec = field(default_factory=PowerLawSpec)
    pool_size: int = field(default=2000, metadata=constraint(ge=50, help="population size N"))
    ks: tuple[int, ...] = field(
        default=(16, 32, 64, 128, 192, 256, 320, 512, 1024, 2048),
        metadata=constraint(ge=1, unordered=True, help="feature counts of the k sweep"),
    )
    n_fixed: int = field(default=256, metadata=constraint(ge=1, help="samples in the k sweep"))
    ns: tuple[int, ...] = field(
        default=(16, 32, 64, 128, 256, 384, 512, 640, 1024),
        metadata=constraint(ge=1, unordered=True, help="sample counts of the n sweep"),
    )
    k_fixed: int = field(default=512, metadata=constraint(ge=1, help="features in the n sweep"))
    ridges: tuple[float, ...] = field(
        default=tuple(float(r) for r in np.geomspace(1e-8, 10.0, 19)),
        metadata=constraint(gt=0, unordered=True, help="per-sample ridges"),
    )
    val_size: int = field(default=200, metadata=constraint(ge=1))
    theory_points: int = field(default=40, metadata=constraint(ge=4))
    seeds: int = field(default=4, metadata=constraint(ge=1))
    seed: int = 0
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: all seeds")
    )

    def __post_init__(self) -> None:
        for name in ("datasets", "feature_maps"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise SpecError(name, f"name at least one, each at most once, got {values}")
        need = max(*self.ns, self.n_fixed) + self.val_size
        for dataset in self.datasets:
            size = pool_size(self, dataset)
            if need > size:
                raise SpecError(
                    "ns",
                    f"the largest n plus val_size ({need}) exceeds the {dataset} pool of {size}; "
                    "lower ns, n_fixed or val_size, or raise pool_size",
                )


def pool_size(spec: RandomFeaturesSpec, dataset: str) -> int:
    """N for ``dataset``: ``pool_size``, at most the 1797 digits."""
    return min(spec.pool_size, DIGITS_SIZE) if dataset == "digits" else spec.pool_size


def make_pool(spec: RandomFeaturesSpec, dataset: str) -> Pool:
    """The population of ``dataset`` (seeded by ``spec.seed``)."""
    if dataset == "power-law":
        p = spec.power_law
        seed = derive_seed("rf-pool", spec.seed, dataset)
        return power_law_pool(spec.pool_size, p.d, p.alpha, p.beta, p.noise, seed)
    return dataset_pool(dataset, pool_size(spec, dataset), spec.seed)


def sweep_points(spec: RandomFeaturesSpec) -> list[tuple[str, int | None, int]]:
    """(sweep, k, n) of every simulated point; k None is kernel ridge regression."""
    points: list[tuple[str, int | None, int]] = [("k", k, spec.n_fixed) for k in spec.ks]
    points.append(("k", None, spec.n_fixed))
    points += [("n", spec.k_fixed, n) for n in spec.ns]
    points += [("n", None, n) for n in spec.ns]
    return points


def _risks(spectral: Spectral, deltas: Tensor, pool: Pool, train: Tensor, val: Tensor) -> dict:
    """Per seed and ridge: test (pool), heldout, train and validation risks, as lists."""
    n, size = train.shape[1], pool.size
    sq = (spectral.predict(deltas) - pool.y).square().sum(-1)  # (S, R, N)
    test = sq.mean(-1)
    train_risk = spectral.train_sse(deltas) / n
    heldout = (size * test - n * train_risk) / (size - n)
    val_risk = torch.stack([sq[s][:, val[s]].mean(-1) for s in range(sq.shape[0])])
    return {"test": test, "heldout": heldout, "train": train_risk, "val": val_risk}


def simulate(
    spec: RandomFeaturesSpec,
    dataset: str,
    feature_map: str,
    lo: int,
    hi: int,
    phase_times: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Records of seeds lo..hi-1: every sweep point solved for every ridge, seeds batched.
    ``phase_times``, if given, accumulates seconds spent making features and kernels
    (``features``) and decomposing and evaluating (``solves``), for the benchmark."""
    from tqdm.auto import tqdm

    times = phase_times if phase_times is not None else {}
    clock = time.perf_counter()

    pool = make_pool(spec, dataset)
    ridges = sorted(spec.ridges)
    perms, acts = [], []
    k_max = max(*spec.ks, spec.k_fixed)
    n_max = max(*spec.ns, spec.n_fixed)
    for i in range(lo, hi):
        gen = torch.Generator().manual_seed(derive_seed("rf", spec.seed, dataset, i))
        perms.append(torch.randperm(pool.size, generator=gen))
        w = torch.randn(pool.x.shape[1], k_max, generator=gen, dtype=torch.float64)
        acts.append(random_features(pool.x, w, feature_map) * math.sqrt(k_max))
    act = torch.stack(acts)  # (S, N, k_max), unscaled features g(x.w)
    val = torch.stack([p[n_max : n_max + spec.val_size] for p in perms])
    gram = feature_kernel(pool.x, pool.x, feature_map)
    times["features"] = times.get("features", 0.0) + time.perf_counter() - clock
    records = []
    for sweep, k, n in tqdm(sweep_points(spec), desc=f"RF {dataset}", leave=False):
        clock = time.perf_counter()
        train = torch.stack([p[:n] for p in perms])
        y = pool.y[train]
        if k is None:
            spectral = Spectral.from_kernel(
                gram[train[:, :, None], train[:, None, :]], y, gram[:, train].permute(1, 0, 2)
            )
        else:
            z = act[..., :k] / math.sqrt(k)
            z_train = torch.gather(z, 1, train[..., None].expand(-1, -1, k))
            spectral = Spectral.from_features(z_train, y, z)
        deltas = torch.tensor(ridges, dtype=torch.float64) * n
        risks = _risks(spectral, deltas, pool, train, val)
        times["solves"] = times.get("solves", 0.0) + time.perf_counter() - clock
        for s in range(hi - lo):
            records.append(
                {
                    "kind": "sim",
                    "dataset": dataset,
                    "feature_map": feature_map,
                    "sweep": sweep,
                    "k": KERNEL if k is None else k,
                    "n": n,
                    "member": lo + s,
                    "ridges": ridges,
                    **{name: [float(v) for v in r[s]] for name, r in risks.items()},
                }
            )
    return records


def _curve(spec: RandomFeaturesSpec, sweep: str) -> list[float]:
    """The fine grid of a theory curve: k log-spaced over the sweep's range and on to twice its
    largest value (towards the kernel limit), n over the sweep's range (beyond it a finite pool
    starts to be memorized whole)."""
    values = spec.ks if sweep == "k" else spec.ns
    top = 2 * max(values) if sweep == "k" else max(values)
    return [float(v) for v in np.geomspace(min(values), top, spec.theory_points)]


def theory(spec: RandomFeaturesSpec, dataset: str, feature_map: str) -> list[dict[str, Any]]:
    """The eigenstructure's summary, the theory at every simulated point (all ridges), and fine
    curves in k and n at the optimal ridge (over a grid 4 times finer than ``ridges``) and at
    the smallest ridge."""
    pool = make_pool(spec, dataset)
    eig = eigenstructure(pool, feature_map)
    ridges = np.array(sorted(spec.ridges))
    base = {"dataset": dataset, "feature_map": feature_map}
    records: list[dict[str, Any]] = [
        {
            "kind": "spectrum",
            **base,
            "modes": len(eig.lam),
            "alpha_fit": eig.exponent(),
            "noise": eig.noise,
            "lam_head": [float(v) for v in eig.lam[:: max(len(eig.lam) // 64, 1)]],
        }
    ]
    for sweep, k, n in sweep_points(spec):
        kk = np.inf if k is None else k
        risk = rf_risk(eig.lam, eig.v2, eig.noise, n, kk, n * ridges)
        records.append(
            {
                "kind": "theory",
                **base,
                "sweep": sweep,
                "k": KERNEL if k is None else k,
                "n": n,
                "ridges": ridges.tolist(),
                "test": risk.test.tolist(),
                "train": risk.train.tolist(),
            }
        )
    fine = np.geomspace(ridges.min(), ridges.max(), 4 * len(ridges) - 3)
    for sweep in ("k", "n"):
        grid = _curve(spec, sweep)
        ks = np.array([*grid, np.inf]) if sweep == "k" else np.array([spec.k_fixed, np.inf])
        ns = np.array([spec.n_fixed]) if sweep == "k" else np.array(grid)
        kg, ng, rg = np.meshgrid(ks, ns, fine, indexing="ij")
        risk = rf_risk(eig.lam, eig.v2, eig.noise, ng, kg, ng * rg)
        best = risk.test.argmin(-1)
        tiny = rf_risk(eig.lam, eig.v2, eig.noise, ng[..., 0], kg[..., 0], ng[..., 0] * fine[0])
        for a, kv in enumerate(ks):
            for b, nv in enumerate(ns):
                records.append(
                    {
                        "kind": "curve",
                        **base,
                        "sweep": sweep,
                        "k": KERNEL if np.isinf(kv) else float(kv),
                        "n": float(nv),
                        "test_opt": float(risk.test[a, b, best[a, b]]),
                        "train_opt": float(risk.train[a, b, best[a, b]]),
                        "ridge_opt": float(fine[best[a, b]]),
                        "test_tiny": float(tiny.test[a, b]),
                    }
                )
    return records


class RandomFeatures:
    """The ``random-features`` experiment (RF ridge regression against its eigenframework)."""

    name = "random-features"
    spec_type = RandomFeaturesSpec
    description = "random-feature ridge regression vs theory: more features and data are better"

    def tasks(self, spec: RandomFeaturesSpec) -> list[Task]:
        groups = [
            (f"data={d}/map={m}", {"dataset": d, "feature_map": m})
            for d in spec.datasets
            for m in spec.feature_maps
        ]
        theory_tasks = [Task(f"{label}/theory", {**p, "theory": True}) for label, p in groups]
        return theory_tasks + seed_tasks(groups, spec.seeds, spec.seeds_per_task)

    def run_task(
        self, spec: RandomFeaturesSpec, task: Task, device: torch.device
    ) -> list[dict[str, Any]]:
        p = task.params
        if p.get("theory"):
            return theory(spec, p["dataset"], p["feature_map"])
        return simulate(spec, p["dataset"], p["feature_map"], p["lo"], p["hi"])

    def summarize(
        self, spec: RandomFeaturesSpec, records: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        from escapelab.report.rf_summary import rf_claims, rf_points

        points = rf_points(records)
        return points + rf_claims(records, points)

    def figures(
        self, spec: RandomFeaturesSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.rf_summary import rf_points
        from escapelab.report.zoo_figures import plot_random_features

        points = rf_points(records)
        paths = []
        for dataset in spec.datasets:
            for fmap in spec.feature_maps:
                curves = [
                    r
                    for r in records
                    if r["kind"] == "curve" and r["dataset"] == dataset and r["feature_map"] == fmap
                ]
                mine = [p for p in points if p["dataset"] == dataset and p["feature_map"] == fmap]
                if mine:
                    title = (
                        f"RF ridge regression, {dataset}, {fmap} features, "
                        f"{mine[0]['seeds']} seeds: measured (points) vs theory (lines)"
                    )
                    path = out_dir / f"random_features_{dataset}_{fmap}.png"
                    paths.append(plot_random_features(mine, curves, spec, path, title))
        return paths
