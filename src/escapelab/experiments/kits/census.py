"""The census kit: records of critical points with their Hessian index, the search for critical
points of any index, and bad minima grouped modulo symmetry.

Shared by ``minima-census`` (E5) and ``minima-rarity`` (issue 16): both train students with the
teacher-student kit, keep every endpoint with its weights, record the critical points they find
with the index of their exact Hessian, and count the bad minima one teacher's students reach by
grouping them in function space (:func:`escapelab.landscape.symmetry.group_minima`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from escapelab.experiments.kits.teacher_student import TeacherStudentSpec, student_arch
from escapelab.landscape.rarity import hessian_index
from escapelab.landscape.symmetry import MinimumGroup, group_minima, probe_inputs
from escapelab.optim.refine import find_critical_points
from escapelab.problems.objective import Objective
from escapelab.seeding import derive_seed


def critical_record(
    source: str,
    width: int,
    source_width: int,
    member: int,
    loss: float,
    grad_norm: float,
    eigs: Tensor,
    tol_eig: float,
) -> dict[str, Any]:
    """A critical point's record: where it came from, its loss and its Hessian index (the
    eigenvalues ``eigs``, ascending, below -``tol_eig`` times the largest in magnitude)."""
    return {
        "role": "critical",
        "source": source,
        "width": width,
        "source_width": source_width,
        "member": member,
        "n_params": int(eigs.shape[0]),
        "loss": loss,
        "grad_norm": grad_norm,
        "eig_min": float(eigs[0]),
        "index": hessian_index(eigs, tol_eig),
    }


def endpoint_records(run: Any, width: int, lo: int) -> list[dict[str, Any]]:
    """One ``endpoint`` record per member of a :class:`~escapelab.experiments.kits.
    teacher_student.StudentRun`: its class, the numbers behind it and its final weights."""
    return [
        {
            "role": "endpoint",
            "width": width,
            "member": lo + i,
            **ep.to_dict(),
            "theta": run.result.theta[i].tolist(),
        }
        for i, ep in enumerate(run.endpoints)
    ]


def search_records(
    objective: Objective,
    starts: Tensor,
    owners: list[int],
    steps: int,
    tol_grad: float,
    tol_eig: float,
    source: str,
    width: int,
) -> list[dict[str, Any]]:
    """Gradient-norm minimisation (:func:`escapelab.optim.refine.find_critical_points`) from
    every row of ``starts``; one :func:`critical_record` (member = its owner) per start that
    reached ``tol_grad``. Starts that stalled leave no record."""
    found, gnorm = find_critical_points(objective, starts, steps, tol_grad)
    ok = gnorm <= tol_grad
    if not bool(ok.any()):
        return []
    found, gnorm = found[ok], gnorm[ok]
    eigs = torch.linalg.eigvalsh(objective.hessian(found))
    loss = objective.loss(found)
    kept = [o for o, flag in zip(owners, ok.tolist(), strict=True) if flag]
    return [
        critical_record(source, width, width, o, float(loss[k]), float(gnorm[k]), eigs[k], tol_eig)
        for k, o in enumerate(kept)
    ]


def search_around(
    spec: Any,
    objective: Objective,
    theta: Tensor,
    around: list[int],
    lo: int,
    width: int,
    tag: str,
) -> list[dict[str, Any]]:
    """:func:`search_records` from ``spec.search_starts`` perturbed copies of each row of
    ``theta`` listed in ``around``: Gaussian noise of size ``spec.search_radius``, drawn from a
    generator seeded by (``tag``, ``spec.seed``, width, ``lo``), so a task's starts do not
    depend on the others. Non-finite starts are dropped; a record's member is ``lo`` + its row."""
    owners = [i for i in around for _ in range(spec.search_starts)]
    if not owners:
        return []
    gen = torch.Generator().manual_seed(derive_seed(tag, spec.seed, width, lo))
    noise = torch.randn(len(owners), theta.shape[1], generator=gen, dtype=torch.float64)
    starts = theta[owners] + spec.search_radius * noise.to(theta)
    finite = torch.isfinite(starts).all(1)
    return search_records(
        objective,
        starts[finite],
        [lo + o for o, ok in zip(owners, finite.tolist(), strict=True) if ok],
        spec.search_steps,
        spec.train.tol_grad,
        spec.train.tol_eig,
        "search",
        width,
    )


def group_bad_minima(
    spec: TeacherStudentSpec,
    width: int,
    bad: list[dict[str, Any]],
    tol_function: float,
    n_probes: int,
    seed: int,
) -> list[MinimumGroup]:
    """The distinct minima among one teacher's ``bad`` endpoint records of one width, modulo
    permutations and sign flips (grouped on ``n_probes`` Gaussian probe inputs)."""
    if not bad:
        return []
    probes = probe_inputs(spec.teacher.d, n_probes, derive_seed("probes", seed))
    arch = student_arch(spec.teacher, width, spec.student.bias)
    thetas = torch.tensor([r["theta"] for r in bad], dtype=torch.float64)
    losses = torch.tensor([r["loss"] for r in bad], dtype=torch.float64)
    return group_minima(arch, thetas, losses, tol_function, probes)
