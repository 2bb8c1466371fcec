"""The teacher-student kit: spec sections, students, training to classified endpoints, subsets.

Every teacher-student experiment names its teacher (:class:`TeacherSpec`), its students
(:class:`StudentSpec`) and how to train them (:class:`TrainSpec`, the library's
:class:`~escapelab.optim.full_batch.TrainConfig` plus precision and the classification's
eigenvalue tolerance) the same way, so a student of width m with seed i is the same network in
every experiment: its initial weights depend only on the student seed, m and i.

The steps every such experiment repeats live here: the students of one task
(:func:`student_start`), trained and classified (:func:`train_students`), and the width-r*
sub-networks of E2 and E3 trained alone (:func:`train_subsets`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from escapelab.config import SpecError, constraint
from escapelab.experiments.base import Task, check_task_count, seed_tasks
from escapelab.landscape.classify import ClassifyConfig, Endpoint, classify
from escapelab.nets.activations import ACTIVATIONS
from escapelab.nets.mlp import Architecture
from escapelab.nets.surgery import select_units
from escapelab.optim.full_batch import TrainConfig, TrainResult, train
from escapelab.problems.objective import Objective
from escapelab.problems.population import (
    BIAS_FREE_ACTIVATIONS,
    CLOSED_FORM_ACTIVATIONS,
    SUPPORTED,
    PopulationObjective,
)
from escapelab.problems.teacher import Teacher, make_teacher, student_objective
from escapelab.seeding import derive_seed

ActivationName = Literal["erf", "tanh", "softplus", "sigmoid", "relu", "linear"]
assert set(ActivationName.__args__) == set(ACTIVATIONS)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TeacherSpec:
    """The teacher: r* = ``width`` hidden units on ``d`` Gaussian inputs."""

    d: int = field(default=2, metadata=constraint(ge=1, help="input dimension"))
    width: int = field(default=4, metadata=constraint(ge=1, help="hidden units r*"))
    activation: ActivationName = "erf"
    incoming: Literal["gaussian", "orthonormal"] = "gaussian"
    outgoing: Literal["ones", "signs", "gaussian"] = "ones"
    scale: float = field(default=2.0, metadata=constraint(gt=0, help="incoming weight scale"))
    bias: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.incoming == "orthonormal" and self.width > self.d:
            raise SpecError(
                "teacher.width",
                f"orthonormal incoming weights need width <= d (width={self.width}, d={self.d}); "
                "lower the width, raise d, or use incoming=gaussian",
            )


@dataclass(frozen=True)
class StudentSpec:
    """The students: ``seeds`` independent initializations at every width in ``widths``."""

    widths: tuple[int, ...] = field(
        default=(4, 5, 6, 7, 8, 10, 12), metadata=constraint(ge=1, unordered=True)
    )
    seeds: int = field(default=48, metadata=constraint(ge=1, help="members per width"))
    init: Literal["glorot", "he", "normal"] = "glorot"
    init_scale: float = field(default=1.0, metadata=constraint(gt=0))
    bias: bool = False
    seed: int = 0


def _retuned(name: str, default: object) -> Any:
    """TrainConfig's field ``name``, with its bounds and help, under another default."""
    return field(default=default, metadata=TrainConfig.__dataclass_fields__[name].metadata)


@dataclass(frozen=True)
class TrainSpec(TrainConfig):
    """The trainer's own config (its ``tol_eig`` is also the relative eigenvalue tolerance
    with which endpoints are classified), plus the precision of the first-order phase. The
    experiments train a little shorter and refine a little longer than the library's defaults
    (4,000 Adam steps, 60 Newton iterations), call a loss below 1e-9 a global minimum, and
    certify every endpoint (up to 6 rounds; see :mod:`escapelab.optim.full_batch`)."""

    steps: int = _retuned("steps", 4000)
    refine_steps: int = _retuned("refine_steps", 60)
    tol_global: float = _retuned("tol_global", 1e-9)
    certify_rounds: int = _retuned("certify_rounds", 6)
    precision: Literal["float32", "float64"] = "float64"

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of ``precision``."""
        return torch.float64 if self.precision == "float64" else torch.float32

    def classify_config(self) -> ClassifyConfig:
        """The classification's tolerances: the trainer's ``tol_global`` and ``tol_eig``."""
        return ClassifyConfig(tol_global=self.tol_global, tol_eig=self.tol_eig)


def check_population(n_samples: int | None, teacher: TeacherSpec, student_bias: bool) -> None:
    """The exact population loss (n_samples = None) for the experiments: the closed-form kernels
    (erf and relu without biases, linear with or without). The quadrature kernels of
    :mod:`escapelab.problems.population` (tanh, sigmoid, softplus) are exact too but cost about
    0.1 s per member and evaluation, too slow for thousands of training steps."""
    if n_samples is not None:
        return
    act = teacher.activation
    if act not in CLOSED_FORM_ACTIVATIONS:
        raise SpecError(
            "teacher.activation",
            f"the exact population loss (n_samples = null) of the experiments needs a closed-form "
            f"kernel ({', '.join(CLOSED_FORM_ACTIVATIONS)}), got {act!r}; set n_samples to a "
            "sample count",
        )
    if act in BIAS_FREE_ACTIVATIONS:
        for name, value in (("teacher.bias", teacher.bias), ("student.bias", student_bias)):
            if value:
                raise SpecError(
                    name,
                    f"the exact population loss (n_samples = null) of {act} networks needs "
                    f"bias = false; supported: {SUPPORTED}",
                )


@dataclass(frozen=True)
class TeacherStudentSpec:
    """The sections every teacher-student experiment shares; experiments subclass it.
    ``n_samples`` = None means the exact population loss (erf or relu without biases, linear;
    see :func:`check_population`)."""

    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    student: StudentSpec = field(default_factory=StudentSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    n_samples: int | None = field(default=None, metadata=constraint(ge=1))
    data_seed: int = 0
    seeds_per_task: int = field(
        default=0, metadata=constraint(ge=0, execution=True, help="0: one task per width")
    )
    teachers: int = field(
        default=8,
        metadata=constraint(ge=1, help="teacher seeds teacher.seed, teacher.seed + 1, ..."),
    )

    def __post_init__(self) -> None:
        check_population(self.n_samples, self.teacher, self.student.bias)


S = TypeVar("S", bound=TeacherStudentSpec)


def for_teacher(spec: S, k: int) -> S:
    """The spec of its k-th teacher alone: seed ``teacher.seed + k``, ``teachers = 1``. The
    students are the same networks for every teacher (their weights depend on the student seed
    only), so the teachers differ in the problem alone."""
    teacher = replace(spec.teacher, seed=spec.teacher.seed + k)
    return replace(spec, teacher=teacher, teachers=1)


def task_spec(spec: S, task: Task) -> S:
    """The single-teacher spec a task of :func:`width_tasks` runs."""
    return for_teacher(spec, int(task.params.get("teacher", 0)))


def width_tasks(spec: TeacherStudentSpec, label: str = "m", **params: object) -> list[Task]:
    """One task per teacher, student width and block of ``seeds_per_task`` seeds: params ``m``
    (the width), the member range [lo, hi), with several teachers ``teacher`` (k, the offset
    from ``teacher.seed``), and ``params``; keys ``{label}=MMMM/seeds=LO-HI``, prefixed by
    ``teacher=KK/`` when there are several teachers."""
    widths = sorted(set(spec.student.widths))
    check_task_count(spec.teachers * len(widths), spec.student.seeds, spec.seeds_per_task)
    groups = []
    several = spec.teachers > 1
    for k in range(spec.teachers):
        prefix, extra = (f"teacher={k:02d}/", {"teacher": k}) if several else ("", {})
        groups += [(f"{prefix}{label}={m:04d}", {**params, **extra, "m": m}) for m in widths]
    return seed_tasks(groups, spec.student.seeds, spec.seeds_per_task)


def record_teacher(spec: TeacherStudentSpec, record: dict[str, Any]) -> int:
    """The teacher seed of a record (records written before several teachers have none: theirs
    is the spec's ``teacher.seed``)."""
    return int(record.get("teacher", spec.teacher.seed))


def per_teacher(
    spec: S,
    records: list[dict[str, Any]],
    summarize: Callable[[S, list[dict[str, Any]]], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """``summarize`` applied to each teacher's records with that teacher's spec, its rows led
    by a ``teacher`` column (the seed); a single teacher's summary is returned as it is."""
    seeds = sorted({record_teacher(spec, r) for r in records})
    if len(seeds) <= 1:
        return summarize(for_teacher(spec, seeds[0] - spec.teacher.seed if seeds else 0), records)
    rows = []
    for seed in seeds:
        mine = [r for r in records if record_teacher(spec, r) == seed]
        one = for_teacher(spec, seed - spec.teacher.seed)
        rows += [{"teacher": seed, **row} for row in summarize(one, mine)]
    return rows


def build_teacher(t: TeacherSpec) -> Teacher:
    """The teacher network a spec describes."""
    return make_teacher(t.d, t.width, t.activation, t.incoming, t.outgoing, t.bias, t.seed, t.scale)


def student_arch(t: TeacherSpec, width: int, bias: bool) -> Architecture:
    """A one-hidden-layer student of ``width`` units for teacher ``t``."""
    return Architecture(t.d, (width,), 1, t.activation, bias=bias, output_bias=False)


def objective_for(spec: TeacherStudentSpec, arch: Architecture, device: torch.device) -> Objective:
    """The loss of students ``arch`` against the spec's teacher: on ``n_samples`` Gaussian
    inputs, or the exact population loss."""
    return student_objective(
        build_teacher(spec.teacher), arch, spec.n_samples, spec.data_seed, spec.train.dtype, device
    )


def student_start(
    spec: TeacherStudentSpec, width: int, lo: int, hi: int, device: torch.device
) -> tuple[Architecture, Tensor]:
    """The architecture of the width-``width`` students and the initial weights of members
    lo..hi-1, (hi - lo, P)."""
    arch = student_arch(spec.teacher, width, spec.student.bias)
    s = spec.student
    theta0 = arch.init(
        hi - lo,
        derive_seed("student", s.seed, width),
        s.init,
        s.init_scale,
        first_member=lo,
        dtype=spec.train.dtype,
        device=device,
    )
    return arch, theta0


def train_and_classify(
    objective: Objective, theta0: Tensor, tr: TrainSpec
) -> tuple[TrainResult, list[Endpoint]]:
    """Train every member to its endpoint and classify it with the spec's tolerances; the
    classification's wall time joins ``result.phase_seconds``."""
    result = train(objective, theta0, tr)
    start = time.perf_counter()
    endpoints = classify(objective, result, tr.classify_config())
    result.phase_seconds["classify"] = time.perf_counter() - start
    return result, endpoints


@dataclass(frozen=True)
class StudentRun:
    """Students of one width trained to their endpoints: what every experiment starts from."""

    arch: Architecture
    objective: Objective
    theta0: Tensor
    result: TrainResult
    endpoints: list[Endpoint]

    def kink_angles(self) -> Tensor | None:
        """Per member, for relu students on the exact population loss: the smallest angle of
        its incoming vectors to collinearity with another unit or the teacher's (0 for a zero
        vector), where the loss's third derivatives jump (or it is not differentiable); None
        for every other objective."""
        if isinstance(self.objective, PopulationObjective) and self.arch.activation == "relu":
            return self.objective.min_incoming_angle(self.result.theta)
        return None


def train_students(
    spec: TeacherStudentSpec, width: int, lo: int, hi: int, device: torch.device
) -> StudentRun:
    """Members lo..hi-1 of the width-``width`` students, trained and classified."""
    arch, theta0 = student_start(spec, width, lo, hi, device)
    objective = objective_for(spec, arch, device)
    result, endpoints = train_and_classify(objective, theta0, spec.train)
    return StudentRun(arch, objective, theta0, result, endpoints)


def check_wider_than_teacher(spec: TeacherStudentSpec) -> None:
    """SpecError on ``student.widths`` unless every width exceeds the teacher's: the
    sub-networks have the teacher's width, so a student must have more units to choose from."""
    narrow = [m for m in spec.student.widths if m <= spec.teacher.width]
    if narrow:
        raise SpecError(
            "student.widths",
            f"every width must exceed teacher.width = {spec.teacher.width} (got {narrow[0]}): "
            "the sub-networks have the teacher's width",
        )


def unit_subsets(m: int, r: int, max_subsets: int, seed: int) -> tuple[list[tuple[int, ...]], bool]:
    """All r-subsets of m units in lexicographic order, or a seeded sample of ``max_subsets``
    distinct ones (sorted) when there are more; the flag says whether it is a sample."""
    total = math.comb(m, r)
    if total <= max_subsets:
        return list(itertools.combinations(range(m), r)), False
    gen = torch.Generator().manual_seed(derive_seed("subsets", seed, m, r))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < max_subsets:
        perm = torch.randperm(m, generator=gen)[:r]
        chosen.add(tuple(sorted(perm.tolist())))
    return sorted(chosen), True


@dataclass(frozen=True)
class SubsetRuns:
    """Every width-r* subset of a block of members, trained alone.

    ``endpoints`` is member-major: member e's subsets are rows e*K .. e*K+K-1, K = len(subsets).
    """

    subsets: list[tuple[int, ...]]
    sampled: bool
    endpoints: list[Endpoint]

    def member(self, e: int) -> list[Endpoint]:
        """The endpoints of member e's subsets, in the order of ``subsets``."""
        k = len(self.subsets)
        return self.endpoints[e * k : (e + 1) * k]

    def winning(self, e: int) -> list[int]:
        """Indices (into ``subsets``) of member e's subsets that reach the global minimum."""
        return [s for s, ep in enumerate(self.member(e)) if ep.kind == "global_min"]


def train_subsets(
    spec: TeacherStudentSpec,
    arch: Architecture,
    theta0: Tensor,
    max_subsets: int,
    subset_seed: int,
    device: torch.device,
) -> SubsetRuns:
    """Train all (or sampled, see :func:`unit_subsets`) width-r* subsets of every member of
    ``theta0`` (E, P) alone, as one ensemble, with the spec's training and classification."""
    m, r = arch.widths[0], spec.teacher.width
    subsets, sampled = unit_subsets(m, r, max_subsets, subset_seed)
    sub_thetas = []
    for units in subsets:
        sub_arch, sub_theta = select_units(arch, theta0, units)
        sub_thetas.append(sub_theta)
    # (K, E, P_sub) -> member-major (E * K, P_sub): member e's subsets are rows e*K .. e*K+K-1
    subs0 = torch.stack(sub_thetas, 1).reshape(-1, sub_arch.n_params)
    _, endpoints = train_and_classify(objective_for(spec, sub_arch, device), subs0, spec.train)
    return SubsetRuns(subsets, sampled, endpoints)
