"""P(failure) against student width over orders of magnitude, and the laws that could explain it.

The two pictures part here. Read literally, the lottery picture is a multi-start search: if one
width-r* sub-network succeeds alone with probability p, a width-m student fails with
probability (1 - p)^C(m, r*), a combinatorially fast law with no free parameter once p is
measured at m = r*. The escape picture predicts no such law: bad minima of width r turn into
saddles at width r + 1, so each extra unit removes failures by some factor, not combinatorially.

The experiment runs in stages (the runner asks :meth:`Scaling.next_stage` for more work once
every task so far is stored, so an interrupted run resumes exactly):

1. **Search.** Every problem of the family (activation x r* x d x incoming weights x teacher
   seed; orthonormal incoming weights only where r* <= d) gets ``search.seeds`` students of width
   r*. The problems whose P(fail at m = r*) lies in [``search.low``, ``search.high``] are the
   interesting ones; up to ``search.problems`` of them are chosen, different activations first,
   then the rate nearest 1/2 (on the logit scale).
2. **Widths.** Each chosen problem gets students of every width r* .. ``widths.factor`` r*,
   starting with the same ``search.seeds`` seeds (the search's students are its first seeds at
   m = r*).
3. **Adaptive seeds.** A width gets more seeds, stage by stage, until it has seen
   ``widths.min_failures`` failures, or the upper end of the Wilson 95 % interval of its rate
   falls below ``widths.target_upper``, or it holds ``widths.max_seeds`` seeds (the budget; the
   summary says which stop it reached).
4. **E2 on the same students.** The first ``subnetworks.seeds`` students of every width above r*
   have their width-r* sub-networks (all, or a sample of ``subnetworks.max_subsets``) trained
   alone from the same initial weights, for the two cells of E2 that speak against the lottery
   reading: a winning sub-network existed but the full network failed, and none existed but it
   succeeded.

Failure = a certified endpoint of one of the classes in ``failures`` (default: bad local
minimum, saddle, flat channel). Members out of budget (``not_converged``) or diverged are neither
success nor failure; they are counted and left out of the rates. The laws are fitted by
:mod:`escapelab.theory.scaling_laws`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from escapelab.config import SpecError, constraint
from escapelab.experiments.base import Task, check_task_count, seed_block_key, seed_tasks
from escapelab.experiments.kits.teacher_student import (
    ActivationName,
    StudentSpec,
    TeacherSpec,
    TeacherStudentSpec,
    TrainSpec,
    student_start,
    train_students,
    train_subsets,
)
from escapelab.landscape.classify import CLASSES
from escapelab.problems.population import CLOSED_FORM_ACTIVATIONS
from escapelab.theory.multistart import wilson_interval
from escapelab.theory.scaling_laws import WidthCounts, fit_laws, upper_bound

FAILURE_CLASSES = ("local_min", "saddle", "flat_channel")
UNCERTIFIED = ("not_converged", "diverged")


@dataclass(frozen=True)
class FamilySpec:
    """The family of problems searched: every combination of the tuples, ``teachers`` teacher
    seeds each (``teacher_seed``, ``teacher_seed`` + 1, ...). Orthonormal incoming weights need
    r* <= d; those combinations are left out."""

    activations: tuple[ActivationName, ...] = ("erf", "relu")
    r_stars: tuple[int, ...] = field(default=(3, 4), metadata=constraint(ge=2, unordered=True))
    ds: tuple[int, ...] = field(default=(2, 4), metadata=constraint(ge=1, unordered=True))
    incoming: tuple[Literal["gaussian", "orthonormal"], ...] = ("gaussian", "orthonormal")
    outgoing: Literal["ones", "signs", "gaussian"] = "ones"
    scale: float = field(default=2.0, metadata=constraint(gt=0, help="incoming weight scale"))
    teachers: int = field(default=1, metadata=constraint(ge=1, help="teacher seeds per cell"))
    teacher_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("activations", "incoming"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise SpecError(f"family.{name}", f"name each value at most once, got {values}")


@dataclass(frozen=True)
class SearchSpec:
    """How the problems are chosen: ``seeds`` students of width r* per problem, the band of
    P(fail at m = r*) that counts as interesting, and how many problems to scale."""

    seeds: int = field(default=48, metadata=constraint(ge=2, help="students per problem"))
    low: float = field(default=0.2, metadata=constraint(gt=0, lt=1))
    high: float = field(default=0.9, metadata=constraint(gt=0, lt=1))
    problems: int = field(default=4, metadata=constraint(ge=1, help="problems to scale"))

    def __post_init__(self) -> None:
        if self.low >= self.high:
            raise SpecError("search.low", f"must be below search.high = {self.high}")


@dataclass(frozen=True)
class WidthsSpec:
    """Widths r* .. ``factor`` r* and the adaptive seeding of each (see the module docstring)."""

    factor: int = field(default=3, metadata=constraint(ge=2, help="widest student / r*"))
    min_failures: int = field(default=20, metadata=constraint(ge=1))
    target_upper: float = field(default=1e-3, metadata=constraint(gt=0, lt=1))
    max_seeds: int = field(default=96, metadata=constraint(ge=2, help="budget per width"))


@dataclass(frozen=True)
class SubnetworkSpec:
    """E2 on the first ``seeds`` students of every width above r* (0: none)."""

    seeds: int = field(default=8, metadata=constraint(ge=0))
    max_subsets: int = field(default=12, metadata=constraint(ge=1))
    subset_seed: int = 0


@dataclass(frozen=True)
class ScalingSpec:
    """The ``scaling`` experiment: the family searched, the widths, E2, students and training.

    ``n_samples`` = None is the exact population loss (erf, relu); tanh, sigmoid and softplus
    need a sample count. ``failures``: the endpoint classes that count as a failure."""

    family: FamilySpec = field(default_factory=FamilySpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    widths: WidthsSpec = field(default_factory=WidthsSpec)
    subnetworks: SubnetworkSpec = field(default_factory=SubnetworkSpec)
    init: Literal["glorot", "he", "normal"] = "glorot"
    init_scale: float = field(default=1.0, metadata=constraint(gt=0))
    student_seed: int = 0
    train: TrainSpec = field(default_factory=TrainSpec)
    n_samples: int | None = field(default=None, metadata=constraint(ge=1))
    data_seed: int = 0
    failures: tuple[Literal["local_min", "saddle", "flat_channel"], ...] = FAILURE_CLASSES
    seeds_per_task: int = field(
        default=48, metadata=constraint(ge=1, execution=True, help="students per task")
    )

    def __post_init__(self) -> None:
        if self.n_samples is None:
            slow = [a for a in self.family.activations if a not in CLOSED_FORM_ACTIVATIONS]
            if slow:
                raise SpecError(
                    "family.activations",
                    f"{slow[0]!r} has no closed-form population loss; use "
                    f"{', '.join(CLOSED_FORM_ACTIVATIONS)}, or set n_samples to a sample count",
                )
        if not self.failures or len(set(self.failures)) != len(self.failures):
            raise SpecError(
                "failures",
                f"name some of {', '.join(FAILURE_CLASSES)} once each, got {self.failures}",
            )
        if self.widths.max_seeds < self.search.seeds:
            raise SpecError(
                "widths.max_seeds", f"must be at least search.seeds = {self.search.seeds}"
            )
        if self.subnetworks.seeds > self.search.seeds:
            raise SpecError(
                "subnetworks.seeds",
                f"must be at most search.seeds = {self.search.seeds} (every width's first seeds)",
            )
        if not _cells(self.family):
            raise SpecError(
                "family.incoming", "no problem left: orthonormal incoming weights need r* <= d"
            )


@dataclass(frozen=True)
class Problem:
    """One teacher of the family."""

    activation: str
    r_star: int
    d: int
    incoming: str
    teacher: int

    @property
    def label(self) -> str:
        """E.g. ``erf-r4-d2-gaussian-t0``: the problem's name in task keys and tables."""
        return f"{self.activation}-r{self.r_star}-d{self.d}-{self.incoming}-t{self.teacher}"

    def params(self) -> dict[str, Any]:
        """The problem as task params."""
        return {
            "activation": self.activation,
            "r_star": self.r_star,
            "d": self.d,
            "incoming": self.incoming,
            "teacher": self.teacher,
        }


def _cells(f: FamilySpec) -> list[tuple[ActivationName, int, int, str]]:
    """(activation, r*, d, incoming) of every cell of the family, in a fixed order."""
    return [
        (a, r, d, inc)
        for a in f.activations
        for r in sorted(f.r_stars)
        for d in sorted(f.ds)
        for inc in f.incoming
        if not (inc == "orthonormal" and r > d)
    ]


def problems(spec: ScalingSpec) -> list[Problem]:
    """The family's problems, in a fixed order: every cell, ``family.teachers`` teachers each."""
    f = spec.family
    return [
        Problem(a, r, d, inc, f.teacher_seed + k)
        for a, r, d, inc in _cells(f)
        for k in range(f.teachers)
    ]


def problem_spec(spec: ScalingSpec, p: Problem, width: int, seeds: int) -> TeacherStudentSpec:
    """The teacher-student spec of problem ``p`` at one width (``seeds`` members)."""
    teacher = TeacherSpec(
        d=p.d,
        width=p.r_star,
        activation=p.activation,  # type: ignore[arg-type]
        incoming=p.incoming,
        outgoing=spec.family.outgoing,  # type: ignore[arg-type]
        scale=spec.family.scale,
        seed=p.teacher,
    )
    student = StudentSpec(
        widths=(width,),
        seeds=seeds,
        init=spec.init,
        init_scale=spec.init_scale,
        seed=spec.student_seed,
    )
    return TeacherStudentSpec(
        teacher=teacher,
        student=student,
        train=spec.train,
        n_samples=spec.n_samples,
        data_seed=spec.data_seed,
        teachers=1,
    )


@dataclass(frozen=True)
class Tally:
    """The endpoints of one problem at one width: seeds run, certified ones, failures."""

    seeds: int
    certified: int
    failures: int
    bad_min: int
    by_class: dict[str, int]

    @property
    def rate(self) -> float:
        return self.failures / self.certified if self.certified else math.nan

    @property
    def upper(self) -> float:
        return upper_bound(self.failures, self.certified)


def tally(spec: ScalingSpec, records: list[dict[str, Any]]) -> Tally:
    """Count one width's member records (role ``student``)."""
    by_class = {c: sum(r["kind"] == c for r in records) for c in CLASSES}
    uncertified = sum(by_class[c] for c in UNCERTIFIED)
    failures = sum(by_class[c] for c in spec.failures)
    return Tally(
        len(records), len(records) - uncertified, failures, by_class["local_min"], by_class
    )


def _students(records: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Member records grouped by (problem label, width)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("role") == "student":
            groups.setdefault((r["problem"], int(r["width"])), []).append(r)
    return groups


def stop_reason(spec: ScalingSpec, t: Tally) -> str | None:
    """Why a width needs no more seeds (None: it needs more)."""
    w = spec.widths
    if t.failures >= w.min_failures:
        return f"{w.min_failures} failures"
    if t.certified and t.upper < w.target_upper:
        return f"upper bound < {w.target_upper:g}"
    if t.seeds >= w.max_seeds:
        return "budget"
    return None


def next_block(spec: ScalingSpec, t: Tally) -> int:
    """The seed count a width that needs more should reach in the next stage: enough for the
    failures still missing at the current rate (at least twice, at most eight times the seeds
    it has), or four times as many with no failure yet; never above the budget."""
    n = t.seeds
    if t.failures and t.certified:
        wanted = math.ceil(1.1 * spec.widths.min_failures / t.rate)
        target = min(8 * n, max(2 * n, wanted))
    else:
        target = 4 * n
    return min(spec.widths.max_seeds, target)


def choose(spec: ScalingSpec, records: list[dict[str, Any]]) -> list[Problem]:
    """The problems to scale: P(fail at m = r*) from the search's seeds within the band, at
    most ``search.problems``, different activations first, then the rate nearest 1/2."""
    groups = _students(records)
    inside = []
    for p in problems(spec):
        mine = [r for r in groups.get((p.label, p.r_star), []) if r["member"] < spec.search.seeds]
        t = tally(spec, mine)
        if t.certified and spec.search.low <= t.rate <= spec.search.high:
            inside.append((p, t))
    chosen: list[Problem] = []
    while inside and len(chosen) < spec.search.problems:
        used = [p.activation for p in chosen]
        best = min(inside, key=lambda pt: (used.count(pt[0].activation), abs(_logit(pt[1].rate))))
        chosen.append(best[0])
        inside.remove(best)
    return chosen


def _logit(q: float) -> float:
    q = min(max(q, 1e-9), 1 - 1e-9)
    return math.log(q / (1 - q))


class Scaling:
    """The ``scaling`` experiment (P(fail) vs width, the laws, E2 by width)."""

    name = "scaling"
    spec_type = ScalingSpec
    description = "how failure scales with width: lottery (combinatorial) vs escape laws"

    def tasks(self, spec: ScalingSpec) -> list[Task]:
        """The search: ``search.seeds`` students of width r* for every problem."""
        count = len(_cells(spec.family)) * spec.family.teachers
        check_task_count(count, spec.search.seeds, spec.seeds_per_task)
        groups = [
            (f"{p.label}/m={p.r_star:04d}", {"stage": "student", "m": p.r_star, **p.params()})
            for p in problems(spec)
        ]
        return seed_tasks(groups, spec.search.seeds, spec.seeds_per_task)

    def next_stage(self, spec: ScalingSpec, records: list[dict[str, Any]]) -> list[Task]:
        """The tasks the stored records call for: every width of the chosen problems up to
        ``search.seeds`` seeds, then more seeds where a width needs them, and the E2 blocks."""
        groups = _students(records)
        tasks: list[Task] = []
        for p in choose(spec, records):
            for m in range(p.r_star, spec.widths.factor * p.r_star + 1):
                mine = groups.get((p.label, m), [])
                t = tally(spec, mine)
                lo = len(mine)
                hi = (
                    spec.search.seeds
                    if lo == 0
                    else (next_block(spec, t) if stop_reason(spec, t) is None else lo)
                )
                params = {"stage": "student", "m": m, **p.params()}
                tasks += _blocks(f"{p.label}/m={m:04d}", params, lo, hi, spec.seeds_per_task)
                if m > p.r_star and spec.subnetworks.seeds:
                    params = {"stage": "subnetworks", "m": m, **p.params()}
                    group = f"{p.label}/subnetworks/m={m:04d}"
                    tasks += _blocks(group, params, 0, spec.subnetworks.seeds, spec.seeds_per_task)
        return tasks

    def run_task(self, spec: ScalingSpec, task: Task, device: torch.device) -> list[dict[str, Any]]:
        q = task.params
        p = Problem(q["activation"], q["r_star"], q["d"], q["incoming"], q["teacher"])
        m, lo, hi = q["m"], q["lo"], q["hi"]
        one = problem_spec(spec, p, m, hi)
        head = {"problem": p.label, **p.params(), "width": m}
        if q["stage"] == "subnetworks":  # the full students' outcomes are their own records
            arch, theta0 = student_start(one, m, lo, hi, device)
            subs = train_subsets(
                one,
                arch,
                theta0,
                spec.subnetworks.max_subsets,
                spec.subnetworks.subset_seed,
                device,
            )
            return [
                {
                    **head,
                    "role": "subnetworks",
                    "member": lo + i,
                    "n_subsets": len(subs.subsets),
                    "sampled": subs.sampled,
                    "n_winning": len(subs.winning(i)),
                }
                for i in range(hi - lo)
            ]
        run = train_students(one, m, lo, hi, device)
        share = run.result.seconds_per_member()
        return [
            {**head, "role": "student", "member": lo + i, **ep.to_dict(), **share}
            for i, ep in enumerate(run.endpoints)
        ]

    def summarize(self, spec: ScalingSpec, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Three kinds of rows (``role``): ``search`` (each problem's P(fail at m = r*) from
        the search's seeds, and whether it was chosen), ``width`` (each chosen problem's
        P(fail) by width with its Wilson interval, the stop its adaptive seeding reached, the
        laws' predictions and the E2 cells) and ``law`` (each law's free parameters,
        log-likelihood, AIC, AIC above the best, deviance and fitted parameter)."""
        groups = _students(records)
        chosen = choose(spec, records)
        names = {p.label for p in chosen}
        rows = [search_row(spec, p, groups, p.label in names) for p in problems(spec)]
        for p in chosen:
            rows += problem_rows(spec, p, groups, records)
        return rows

    def figures(
        self, spec: ScalingSpec, records: list[dict[str, Any]], out_dir: Path
    ) -> list[Path]:
        from escapelab.report.scaling_figures import plot_scaling

        band = (spec.search.low, spec.search.high)
        return plot_scaling(self.summarize(spec, records), band, out_dir)


def _blocks(group: str, params: dict[str, Any], lo: int, hi: int, size: int) -> list[Task]:
    """Tasks for seeds lo..hi-1 of ``group`` in blocks of at most ``size``."""
    return [
        Task(
            seed_block_key(group, a, min(a + size, hi)),
            {**params, "lo": a, "hi": min(a + size, hi)},
        )
        for a in range(lo, hi, size)
    ]


def e2_cells(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The two E2 cells against the lottery reading among one width's sub-network records, with
    Wilson intervals: a winning sub-network existed but the full network failed
    (``ticket_but_failed``), none existed but it succeeded (``no_ticket_but_succeeded``)."""
    n = len(records)
    failed = sum(r["n_winning"] > 0 and r["full_kind"] != "global_min" for r in records)
    lucky = sum(r["n_winning"] == 0 and r["full_kind"] == "global_min" for r in records)
    out: dict[str, Any] = {"e2_n": n}
    for name, k in (("ticket_but_failed", failed), ("no_ticket_but_succeeded", lucky)):
        lo, hi = wilson_interval(k, n) if n else (math.nan, math.nan)
        out |= {name: k / n if n else math.nan, f"{name}_low": lo, f"{name}_high": hi}
    out["e2_sampled"] = any(r["sampled"] for r in records)
    return out


Groups = dict[tuple[str, int], list[dict[str, Any]]]


def search_row(spec: ScalingSpec, p: Problem, groups: Groups, chosen: bool) -> dict[str, Any]:
    """A problem's P(fail at m = r*) from the search's seeds alone, as the search saw it."""
    mine = [r for r in groups.get((p.label, p.r_star), []) if r["member"] < spec.search.seeds]
    t = tally(spec, mine)
    lo, hi = wilson_interval(t.failures, t.certified) if t.certified else (math.nan, math.nan)
    return {
        "role": "search",
        "problem": p.label,
        **p.params(),
        "n": t.certified,
        "failures": t.failures,
        "p_fail": t.rate,
        "ci_low": lo,
        "ci_high": hi,
        "in_band": spec.search.low <= t.rate <= spec.search.high,
        "chosen": chosen,
    }


def problem_rows(
    spec: ScalingSpec, p: Problem, groups: Groups, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One chosen problem's ``width`` rows and, once m = r* and a wider width have certified
    endpoints, its ``law`` rows."""
    subnets: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("role") == "subnetworks" and r["problem"] == p.label:
            subnets.setdefault(int(r["width"]), []).append(r)
    widths = range(p.r_star, spec.widths.factor * p.r_star + 1)
    tallies = {m: tally(spec, groups.get((p.label, m), [])) for m in widths}
    counts = [WidthCounts(m, t.certified, t.failures) for m, t in tallies.items() if t.certified]
    ref = next((c for c in counts if c.m == p.r_star), None)
    wider = [c for c in counts if c.m > p.r_star]
    fits = []
    if ref is not None and wider and 0 < ref.failures < ref.n:
        fits = fit_laws(ref, wider, p.r_star)
    rows = []
    for m, t in tallies.items():
        if not t.seeds:
            continue
        lo, hi = wilson_interval(t.failures, t.certified) if t.certified else (math.nan,) * 2
        full = {r["member"]: r["kind"] for r in groups.get((p.label, m), [])}
        joined = [
            {**r, "full_kind": full[r["member"]]} for r in subnets.get(m, []) if r["member"] in full
        ]
        rows.append(
            {
                "role": "width",
                "problem": p.label,
                "r_star": p.r_star,
                "width": m,
                "seeds": t.seeds,
                "certified": t.certified,
                "failures": t.failures,
                "p_fail": t.rate,
                "ci_low": lo,
                "ci_high": hi,
                "p_bad_min": t.bad_min / t.certified if t.certified else math.nan,
                **{c: t.by_class[c] for c in ("local_min", "saddle", "flat_channel")},
                **{c: t.by_class[c] for c in UNCERTIFIED},
                "stop": stop_reason(spec, t) or "more seeds pending",
                **{
                    f"pred_{f.law}": f.predicted[m]
                    for f in fits
                    if f.law != "free" and m in f.predicted
                },
                **{
                    f"res_{f.law}": f.residuals[m]
                    for f in fits
                    if f.law != "free" and m in f.residuals
                },
                **{
                    f"pred_lottery_subsets_{end}": getattr(f, f"predicted_{end}")[m]
                    for f in fits
                    if f.law == "lottery_subsets" and m in f.predicted
                    for end in ("low", "high")
                },
                **(e2_cells(joined) if joined else {}),
            }
        )
    best = min((f.aic for f in fits), default=math.nan)
    for f in fits:
        rows.append(
            {
                "role": "law",
                "problem": p.label,
                "law": f.law,
                "k": f.k,
                "log_likelihood": f.log_likelihood,
                "aic": f.aic,
                "delta_aic": f.aic - best,
                "deviance": f.deviance,
                "parameter": f.parameter,
                "parameter_low": f.parameter_low,
                "parameter_high": f.parameter_high,
                "widths_scored": len(wider),
            }
        )
    return rows


__all__ = ["FAILURE_CLASSES", "Problem", "Scaling", "ScalingSpec", "problems"]
