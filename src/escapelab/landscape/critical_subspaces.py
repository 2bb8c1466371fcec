"""Which embeddings of a critical point stay critical: the measurement behind the subspace counts.

:mod:`escapelab.theory.symmetry_counts` counts affine subspaces of critical points that a width-r
critical point (W_1..W_r, A_1..A_r) of a teacher-student population loss generates in width
m > r. Whether a construction belongs in the count is a fact about gradients, so this module
measures it: it certifies a width-r critical point (gradient infinity norm <= 1e-12, float64,
exact population loss), embeds it in width m by one construction, samples random points of the
resulting affine subspace and evaluates the exact gradient at each. A construction is *verified*
on that point when every sample has |grad L|_inf <= ``TOL_VERIFIED`` (1e-12).

The constructions (the ``m - r`` extra units; f(x) = sum_j a_j sigma(w_j . x), residual
rho = f - y):

* ``duplicate`` — each extra unit copies the incoming vector of a random unit i; the output
  weights of unit i's copies are a random split gamma_j A_i with sum_j gamma_j = 1 (gammas drawn
  around 1/s with spread 1, so most fall outside [0, 1]). dL/da_j = dL/dA_i and
  dL/dw_j = gamma_j dL/dW_i vanish with those of unit i (Fukumizu & Amari 2000): critical.
* ``zero_output`` — a_j = 0 with a free random w_j. dL/da_j = E[rho sigma(w_j . x)]: zero where
  rho = 0 (a global minimum), generically not otherwise.
* ``zero_unit`` — a_j = 0 and w_j = 0: dL/da_j = sigma(0) E[rho] and dL/dw_j = 0, so critical
  when sigma(0) = 0 (erf, tanh, relu). A point, not a direction: only the duplicates around it
  can vary, so this construction's samples coincide.
* ``zero_input`` — w_j = 0 with a free output weight: dL/dw_j = a_j sigma'(0) E[rho x], which
  nothing forces to vanish.
* ``sign_flip`` — like ``duplicate``, but a random half of the copies take -W_i and contribute
  -a_j to unit i's sum: the same function exactly when sigma is odd (erf, tanh).
* ``cancelling_group`` — the extra units (at least 2) share one free incoming vector v and have
  free output weights summing to 0: the function is unchanged for every v, and
  dL/da_j = E[rho sigma(v . x)] vanishes where rho = 0.

:func:`check_constructions` runs these on global minima (the teacher itself, loss 0) and on
certified critical points of narrower students (loss > 0), for several teachers, and returns
one row per (construction, teacher, critical point, m); :func:`construction_verdicts` sums the
rows up per construction and kind of critical point. What it measured is quoted in
:mod:`escapelab.theory.symmetry_counts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from escapelab.config import SpecError
from escapelab.nets.mlp import Architecture, Layer
from escapelab.optim.full_batch import TrainConfig, train
from escapelab.optim.refine import NewtonRefiner
from escapelab.problems.population import PopulationObjective
from escapelab.problems.teacher import Teacher, make_teacher
from escapelab.seeding import derive_seed

CONSTRUCTIONS = (
    "duplicate",
    "zero_output",
    "zero_unit",
    "zero_input",
    "sign_flip",
    "cancelling_group",
)
#: the activations with a closed-form population kernel and no biases (what the check runs on)
CHECK_ACTIVATIONS = ("erf", "relu")
#: a sample is a critical point when its gradient's infinity norm is at most this
TOL_VERIFIED = 1e-12
#: a critical point with a loss above this is a non-global one
TOL_GLOBAL = 1e-9
#: how the narrower students are trained: the experiments' settings (Adam, then damped Newton,
#: certification to a gradient infinity norm of 1e-12), with 2,000 first-order steps
TRAINING = TrainConfig(
    steps=2000, refine_steps=60, tol_global=TOL_GLOBAL, certify_rounds=6, tol_cert=TOL_VERIFIED
)


@dataclass(frozen=True)
class CriticalPoint:
    """A certified critical point of width r: incoming W (r, d), outgoing A (r,), its loss and
    gradient infinity norm; ``kind`` is "global" (loss <= TOL_GLOBAL) or "non-global"."""

    weights: Tensor
    outputs: Tensor
    loss: float
    grad_inf: float

    @property
    def width(self) -> int:
        return self.weights.shape[0]

    @property
    def kind(self) -> str:
        return "global" if self.loss <= TOL_GLOBAL else "non-global"


def _arch(d: int, width: int, activation: str) -> Architecture:
    return Architecture(d, (width,), 1, activation, bias=False, output_bias=False)


def check_teacher(activation: str, d: int, r_star: int, seed: int) -> Teacher:
    """The teacher of the check: ``r_star`` units on ``d`` inputs, Gaussian incoming weights of
    scale 2 (clearly nonlinear units) and Gaussian output weights, no biases."""
    return make_teacher(d, r_star, activation, "gaussian", "gaussian", False, seed, 2.0)


def _objective(teacher: Teacher, width: int) -> PopulationObjective:
    """The exact population loss of width-``width`` students of ``teacher`` (float64)."""
    arch = _arch(teacher.arch.d_in, width, teacher.arch.activation)
    return PopulationObjective(arch, teacher.arch, teacher.theta)


def _flat(arch: Architecture, weights: Tensor, outputs: Tensor) -> Tensor:
    """Flat parameters (..., P) of incoming (..., m, d) and outgoing (..., m) weights."""
    return arch.flatten([Layer(weights, None), Layer(outputs.unsqueeze(-2), None)])


def _split(theta: Tensor, arch: Architecture) -> tuple[Tensor, Tensor]:
    first, last = arch.unflatten(theta)
    return first.weight, last.weight[..., 0, :]


def teacher_point(teacher: Teacher) -> CriticalPoint:
    """The teacher itself as a width-r* student: a global minimum (loss 0 up to rounding)."""
    objective = _objective(teacher, teacher.width)
    theta = teacher.theta.unsqueeze(0)
    loss, grad = objective.loss_and_grad(theta)
    weights, outputs = _split(theta[0], objective.arch)
    return CriticalPoint(weights, outputs, float(loss[0]), float(grad.abs().max()))


def _polish(objective: PopulationObjective, theta: Tensor, steps: int = 30) -> Tensor:
    """A few more damped Newton iterations on certified points (E, P), keeping for each member
    the iterate with the smallest gradient: certification stops at 1e-12, and the embeddings
    scale gradients by the split factors."""
    loss, grad = objective.loss_and_grad(theta)
    refiner = NewtonRefiner(objective, theta.clone(), loss, grad)
    best, best_norm = theta.clone(), grad.abs().amax(1)
    for _ in range(steps):
        refiner.step()
        norm = refiner.grad.abs().amax(1)
        better = norm < best_norm
        best[better], best_norm[better] = refiner.theta[better], norm[better]
    return best


def trained_points(
    teacher: Teacher, width: int, members: int, seed: int = 0
) -> list[CriticalPoint]:
    """Certified critical points of width-``width`` students of ``teacher``: ``members`` students
    trained as :data:`TRAINING` says, the certified ones polished (:func:`_polish`) and kept with
    their loss and gradient."""
    objective = _objective(teacher, width)
    theta0 = objective.arch.init(members, derive_seed("count-check", seed, width))
    result = train(objective, theta0, TRAINING, progress=False)
    certified = result.certified if result.certified is not None else torch.zeros(0, dtype=bool)
    theta = _polish(objective, result.theta[certified])
    loss, grad = objective.loss_and_grad(theta)
    points = []
    for e in range(theta.shape[0]):
        weights, outputs = _split(theta[e], objective.arch)
        points.append(CriticalPoint(weights, outputs, float(loss[e]), float(grad[e].abs().max())))
    return points


def _split_weights(size: int, gen: torch.Generator) -> Tensor:
    """``size`` random split factors summing to 1, mostly outside [0, 1] (spread 1 around 1/s)."""
    gammas = torch.randn(size, generator=gen, dtype=torch.float64) + 1.0 / size
    return gammas - (gammas.sum() - 1.0) / size


def embed(
    point: CriticalPoint, m: int, construction: str, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """One random point of the width-m affine subspace that ``construction`` builds from
    ``point``: incoming (m, d) and outgoing (m,) weights (see the module docstring)."""
    r, d = point.weights.shape
    extra = m - r
    if construction not in CONSTRUCTIONS:
        raise SpecError("construction", f"must be one of {', '.join(CONSTRUCTIONS)}")
    need = 2 if construction == "cancelling_group" else 1
    if extra < need:
        raise SpecError("m", f"{construction} needs m >= r + {need}, got {m}")
    w, a = point.weights.clone(), point.outputs.clone()
    if construction in ("duplicate", "sign_flip"):
        source = torch.cat([torch.arange(r), torch.randint(0, r, (extra,), generator=gen)])
        signs = torch.ones(m, dtype=torch.float64)
        if construction == "sign_flip":
            signs = torch.where(torch.rand(m, generator=gen) < 0.5, -1.0, 1.0).to(signs)
        new_w = signs.unsqueeze(1) * w[source]
        new_a = torch.empty(m, dtype=torch.float64)
        for i in range(r):
            copies = (source == i).nonzero().squeeze(1)
            new_a[copies] = signs[copies] * _split_weights(len(copies), gen) * a[i]
        return new_w, new_a
    zeros_a = torch.zeros(extra, dtype=torch.float64)
    if construction == "zero_output":
        v = torch.randn(extra, d, generator=gen, dtype=torch.float64)
        return torch.cat([w, v]), torch.cat([a, zeros_a])
    if construction == "zero_unit":
        return torch.cat([w, torch.zeros(extra, d, dtype=torch.float64)]), torch.cat([a, zeros_a])
    if construction == "zero_input":
        c = torch.randn(extra, generator=gen, dtype=torch.float64)
        return torch.cat([w, torch.zeros(extra, d, dtype=torch.float64)]), torch.cat([a, c])
    v = torch.randn(1, d, generator=gen, dtype=torch.float64).expand(extra, d)
    c = torch.randn(extra, generator=gen, dtype=torch.float64)
    return torch.cat([w, v]), torch.cat([a, c - c.mean()])


def max_gradient(
    teacher: Teacher, point: CriticalPoint, m: int, construction: str, samples: int, seed: int
) -> float:
    """The largest gradient infinity norm over ``samples`` random points of the subspace."""
    gen = torch.Generator().manual_seed(derive_seed("count-check-samples", seed, m))
    points = [embed(point, m, construction, gen) for _ in range(samples)]
    objective = _objective(teacher, m)
    theta = _flat(
        objective.arch, torch.stack([p[0] for p in points]), torch.stack([p[1] for p in points])
    )
    _, grad = objective.loss_and_grad(theta)
    return float(grad.abs().max())


def _check_inputs(
    activation: str, d: int, r_star: int, teachers: int, samples: int, constructions: list[str]
) -> None:
    if activation not in CHECK_ACTIVATIONS:
        raise SpecError("activation", f"must be one of {', '.join(CHECK_ACTIVATIONS)}")
    for name, value, low in (("d", d, 1), ("r_star", r_star, 2), ("teachers", teachers, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise SpecError(name, f"must be an integer >= {low}, got {value!r}")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise SpecError("samples", f"must be an integer >= 1, got {samples!r}")
    unknown = [c for c in constructions if c not in CONSTRUCTIONS]
    if unknown or not constructions:
        raise SpecError(
            "constructions", f"must be some of {', '.join(CONSTRUCTIONS)}, got {constructions!r}"
        )


def check_constructions(
    activation: str = "erf",
    d: int = 3,
    r_star: int = 3,
    teachers: int = 2,
    samples: int = 5,
    constructions: Iterable[str] = CONSTRUCTIONS,
    students: int = 4,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Measure every construction on global and non-global certified critical points.

    For each of ``teachers`` teachers (:func:`check_teacher`, seeds 0, 1, ...): the teacher
    itself (global, width r*) and the certified endpoints of ``students`` width-(r* - 1)
    students (non-global: they cannot reach loss 0), each embedded in widths r + 1 and r + 2 by
    every construction, ``samples`` random points per subspace. One row per (construction,
    teacher, point, m): construction, activation, teacher, kind, r, m, loss, base_grad (the
    point's own gradient), max_grad (over the samples) and verified (max_grad <=
    TOL_VERIFIED). Raises :class:`SpecError` naming the field on bad input.
    """
    names = list(constructions)
    _check_inputs(activation, d, r_star, teachers, samples, names)
    rows: list[dict[str, Any]] = []
    for seed in tqdm(range(teachers), desc="teachers", disable=not progress):
        teacher = check_teacher(activation, d, r_star, seed)
        points = [teacher_point(teacher)]
        points += trained_points(teacher, r_star - 1, students, seed)
        for k, point in enumerate(points):
            for name in names:
                for m in (point.width + 1, point.width + 2):
                    if name == "cancelling_group" and m < point.width + 2:
                        continue
                    grad = max_gradient(teacher, point, m, name, samples, seed * 1000 + k)
                    rows.append(
                        {
                            "construction": name,
                            "activation": activation,
                            "teacher": seed,
                            "kind": point.kind,
                            "r": point.width,
                            "m": m,
                            "loss": point.loss,
                            "base_grad": point.grad_inf,
                            "max_grad": grad,
                            "verified": grad <= TOL_VERIFIED,
                        }
                    )
    return rows


def construction_verdicts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per construction and kind of critical point: how many rows, how many verified, the
    largest gradient, and the verdict "verified" (all rows), "refuted" (none) or "mixed"."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["construction"], row["activation"], row["kind"]), []).append(row)
    out = []
    for (name, activation, kind), mine in groups.items():
        n_ok = sum(r["verified"] for r in mine)
        verdict = "verified" if n_ok == len(mine) else "refuted" if n_ok == 0 else "mixed"
        out.append(
            {
                "construction": name,
                "activation": activation,
                "kind": kind,
                "cases": len(mine),
                "verified_cases": n_ok,
                "max_grad": max(r["max_grad"] for r in mine),
                "min_grad": min(r["max_grad"] for r in mine),
                "verdict": verdict,
            }
        )
    return out


__all__ = [
    "CHECK_ACTIVATIONS",
    "CONSTRUCTIONS",
    "TOL_VERIFIED",
    "CriticalPoint",
    "check_constructions",
    "check_teacher",
    "construction_verdicts",
    "embed",
    "max_gradient",
    "teacher_point",
    "trained_points",
]
