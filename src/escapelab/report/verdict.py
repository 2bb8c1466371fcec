"""The verdict: every run in a store gathered around the claims of the escape-dimension paper.

Martinelli, Şimşek, Gerstner, Brea et al. (2026) contrast the lottery ticket hypothesis read
literally (a wide network is a multi-start over its sub-networks) with escape dimensions (width
turns bad minima into saddles). Each :data:`CLAIMS` entry names the experiments that bear on it
and a rule per experiment that reads the run's summary rows and says whether they support or
contradict the claim, with the sentence that shows why. The rules are deliberately plain
(interval against prediction, count against zero), so a reader can check them against the run
page; "inconclusive" is the answer whenever the numbers cannot decide (nothing converged, no bad
minimum to embed, intervals that overlap).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from escapelab.report.findings import share

Status = Literal["supports", "contradicts", "inconclusive"]
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Evidence:
    """What one run says about a claim: ``status``, the sentence why, and the run it is from."""

    status: Status
    sentence: str
    experiment: str = ""
    spec_hash: str = ""


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, the experiments that test it (with their rules), and the command
    that produces evidence when the store has none."""

    key: str
    title: str
    picture: str
    rules: dict[str, Callable[[Rows, dict[str, Any]], Evidence]]
    command: str


def _pooled(rows: Rows) -> Rows:
    pooled = [r for r in rows if r.get("teacher") == "pooled"]
    return pooled or rows


def multistart_sweep(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Width sweep: the overlapping-subset prediction against the measured interval at every
    width above r*. Contradicted when it lies above the interval's upper end even if every
    student that ran out of budget had succeeded (a budget is no verdict on the landscape);
    inconclusive when only those students separate the two, or when nothing succeeded at r*."""
    r_star = spec["teacher"]["width"]
    main = _pooled(rows)
    wider = [r for r in main if r["width"] > r_star and not math.isnan(r["pred_subsets"])]
    if not wider:
        return Evidence("inconclusive", f"no width above r* = {r_star} with a measured p at r*")
    if next(r for r in main if r["width"] == r_star)["p_global"] == 0:
        return Evidence(
            "inconclusive",
            f"no student of width r* = {r_star} succeeded, so the prediction is 0 at every width",
        )

    def measured(r: dict[str, Any]) -> str:
        return share(r["p_global"], r["ci_low"], r["ci_high"])

    above = [r for r in wider if r["pred_subsets"] > r["ci_high"] + r.get("p_not_converged", 0)]
    if above:
        r = above[-1]
        return Evidence(
            "contradicts",
            f"at m = {r['width']} the multi-start prediction {r['pred_subsets']:.2f} lies above "
            f"the measured {measured(r)}, even counting the {r.get('p_not_converged', 0):.2f} "
            "out of budget as successes",
        )
    off = [r for r in wider if not r["ci_low"] <= r["pred_subsets"] <= r["ci_high"]]
    if off:
        r = off[-1]
        budget = r.get("p_not_converged", 0)
        return Evidence(
            "inconclusive",
            f"at m = {r['width']} the multi-start prediction {r['pred_subsets']:.2f} lies outside "
            f"the measured {measured(r)}"
            + (f", but {budget:.2f} of the students ran out of budget" if budget else ""),
        )
    return Evidence(
        "supports",
        f"at every width above r* = {r_star} the multi-start prediction lies inside the "
        "measured interval",
    )


def multistart_tickets(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Subnetworks: students off the diagonal (success without a ticket, failure with one)
    contradict 'the network succeeds because a ticket exists'."""
    main = _pooled(rows)
    n = sum(r["n"] for r in main)
    off = sum(r["success_without_ticket"] + r["failure_with_ticket"] for r in main)
    if not n:
        return Evidence("inconclusive", "no student finished")
    sentence = f"{off} of {n} students are off the diagonal of ticket × success"
    return Evidence("contradicts" if off else "supports", sentence)


def perturbed_tickets_fail(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Ticket perturbation: supported when some perturbation makes winning tickets fail more
    often than unperturbed ones with the two intervals apart (the perturbed lower end above the
    unperturbed upper end); contradicted when no perturbation raises the failure rate at all."""
    verdicts = []
    for kind, problem in dict.fromkeys((r["ticket_kind"], r["problem"]) for r in rows):
        mine = [r for r in rows if r["ticket_kind"] == kind and r["problem"] == problem]
        base = next((r for r in mine if r["perturbation"] == "none" and r["n"]), None)
        tested = [r for r in mine if r["perturbation"] != "none" and r["n"]]
        if base is None or not tested:
            continue
        worst = max(tested, key=lambda r: r["failure_rate"])
        status: Status = (
            "supports"
            if worst["ci_low"] > base["ci_high"]
            else "contradicts"
            if worst["failure_rate"] <= base["failure_rate"]
            else "inconclusive"
        )
        verdicts.append(
            (
                status,
                f"{kind} tickets on {problem}: failure rate {share(base['failure_rate'])} "
                f"unperturbed, {share(worst['failure_rate'], worst['ci_low'], worst['ci_high'])} "
                f"under '{worst['label']}'",
            )
        )
    if not verdicts:
        return Evidence("inconclusive", "no winning ticket was perturbed")
    return Evidence(_combine([s for s, _ in verdicts]), "; ".join(t for _, t in verdicts))


def dose_tickets_fail(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Ticket dose: per ticket kind and problem, supported when some dose's difference from the
    floor has its Newcombe interval above 0 (a threshold exists); contradicted when every dose's
    difference has its upper end below the target half-width (no dose raises failure by as much
    as the resolution asked for); inconclusive otherwise."""
    target = spec.get("target_half_width", 0.05)
    verdicts = []
    for kind, problem in dict.fromkeys((r["ticket_kind"], r["problem"]) for r in rows):
        mine = [r for r in rows if (r["ticket_kind"], r["problem"]) == (kind, problem)]
        doses = [r for r in mine if r["role"] == "dose" and not math.isnan(r["diff"])]
        if not doses:
            continue
        firsts = [r for r in mine if r["role"] == "threshold" and r["threshold"] is not None]
        top = max(doses, key=lambda r: r["diff_high"])
        status: Status = (
            "supports" if firsts else "contradicts" if top["diff_high"] < target else "inconclusive"
        )
        said = (
            "failure departs from the floor first at " + ", ".join(t["label"] for t in firsts)
            if firsts
            else f"no dose departs from the floor (difference at most {top['diff_high']:+.2f} "
            f"at {top['label']}, 95 % upper end)"
        )
        verdicts.append((status, f"{kind} tickets on {problem}: {said}"))
    if not verdicts:
        return Evidence("inconclusive", "no winning ticket was perturbed")
    return Evidence(_combine([s for s, _ in verdicts]), "; ".join(t for _, t in verdicts))


def escape_dimensions(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Escape: supported when embedded bad minima are saddles and training escapes them;
    contradicted when bad minima were embedded and none became a saddle or escaped."""
    runs = [r for r in rows if r.get("runs")]
    if not runs:
        return Evidence("inconclusive", "no bad minimum was found to embed")
    n = sum(r["runs"] for r in runs)
    saddles = round(sum(r["saddle_measured"] * r["runs"] for r in runs))
    escaped = round(sum(r["escape_rate"] * r["runs"] for r in runs))
    sentence = f"{saddles} of {n} embedded bad minima are saddles, {escaped} of {n} runs escaped"
    if saddles and escaped:
        return Evidence("supports", sentence)
    return Evidence("contradicts" if not (saddles or escaped) else "inconclusive", sentence)


def _falls(first: float, last: float, what: str, w0: int, w1: int) -> Evidence:
    sentence = f"{what} goes from {share(first)} at m = {w0} to {share(last)} at m = {w1}"
    if math.isnan(first) or math.isnan(last) or w0 == w1:
        return Evidence("inconclusive", sentence)
    if last < first:
        return Evidence("supports", sentence)
    return Evidence("contradicts" if last > first else "inconclusive", sentence)


def rare_minima_census(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Census: the share of seeds in bad minima from the narrowest to the widest width."""
    if not rows:
        return Evidence("inconclusive", "no width finished")
    first, last = rows[0], rows[-1]
    return _falls(
        first["bad_minima"] / first["seeds"],
        last["bad_minima"] / last["seeds"],
        "the share of seeds in bad minima",
        first["width"],
        last["width"],
    )


def rare_minima_rarity(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Rarity: the pooled share of students in bad minima from the narrowest to the widest."""
    widths = [r for r in rows if r["role"] == "width"]
    if not widths:
        return Evidence("inconclusive", "no width finished")
    first, last = widths[0], widths[-1]
    return _falls(
        first["p_bad_min"],
        last["p_bad_min"],
        "the share of students in bad minima (pooled over teachers)",
        first["width"],
        last["width"],
    )


def rare_minima_sweep(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Width sweep: P(bad local minimum) from the narrowest to the widest student."""
    main = _pooled(rows)
    if not main:
        return Evidence("inconclusive", "no width finished")
    first, last = main[0], main[-1]
    return _falls(
        first["p_bad_min"], last["p_bad_min"], "P(bad local minimum)", first["width"], last["width"]
    )


TICKET_MARGIN = 0.01
"""A sparse ticket 'matches' the dense network when within this much test accuracy (1 point)."""


def classic_tickets(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Lottery: supported when, on some dataset and pruning round, the rewound ticket is within
    :data:`TICKET_MARGIN` of the dense accuracy and beats its re-initialized control;
    contradicted when no pruned ticket comes within the margin."""
    statuses, sentences = [], []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = {(r["prune_level"], r["role"]): r for r in rows if r["dataset"] == dataset}
        dense = mine.get((0, "ticket"))
        levels = sorted({lvl for lvl, _ in mine if lvl > 0})
        if dense is None or not levels or math.isnan(dense["test_acc_es"]):
            continue
        good = [
            lvl
            for lvl in levels
            if mine[(lvl, "ticket")]["test_acc_es"] >= dense["test_acc_es"] - TICKET_MARGIN
            and mine[(lvl, "ticket")]["test_acc_es"]
            > mine.get((lvl, "reinit"), {"test_acc_es": -math.inf})["test_acc_es"]
        ]
        if good:
            lvl = good[-1]
            statuses.append("supports")
            sentences.append(
                f"on {dataset} a ticket with {100 * mine[(lvl, 'ticket')]['density']:.3g} % of the "
                f"weights reaches {100 * mine[(lvl, 'ticket')]['test_acc_es']:.3g} % "
                f"(dense {100 * dense['test_acc_es']:.3g} %) and beats its re-initialization"
            )
        else:
            close = any(
                mine[(lvl, "ticket")]["test_acc_es"] >= dense["test_acc_es"] - TICKET_MARGIN
                for lvl in levels
            )
            statuses.append("inconclusive" if close else "contradicts")
            sentences.append(
                f"on {dataset} no pruned ticket both matches the dense network and "
                "beats its re-initialization"
            )
    if not statuses:
        return Evidence("inconclusive", "no classification dataset with a pruned round")
    return Evidence(_combine(statuses), "; ".join(sentences))


# AIC differences: within 2 a law is as good as the best; beyond 10 it is decisively worse
# (Burnham & Anderson 2002, sec. 2.6)
AIC_SAME, AIC_DECISIVE = 2.0, 10.0


def multistart_scaling(rows: Rows, spec: dict[str, Any]) -> Evidence:
    """Scaling: on each chosen problem, the overlapping-subsets lottery law (no free parameter)
    against the best law by AIC. Supports when it is within 2 AIC units of the best, contradicts
    when more than 10 behind; inconclusive in between, or when no law could be fitted."""
    statuses, sentences = [], []
    for name in dict.fromkeys(r["problem"] for r in rows if r["role"] == "law"):
        laws = {r["law"]: r for r in rows if r["role"] == "law" and r["problem"] == name}
        gap = laws["lottery_subsets"]["delta_aic"]
        best = min(laws.values(), key=lambda r: (r["aic"], r["k"]))["law"]
        statuses.append(
            "supports"
            if gap <= AIC_SAME
            else "contradicts"
            if gap > AIC_DECISIVE
            else "inconclusive"
        )
        sentences.append(
            f"on {name} the combinatorial law is {gap:.3g} AIC units behind the best ({best})"
        )
    if not statuses:
        return Evidence("inconclusive", "no problem with a law fitted yet")
    return Evidence(_combine(statuses), "; ".join(sentences))


def _combine(statuses: list[str]) -> Status:
    """One status from several: unanimous, or inconclusive when they disagree or are mixed."""
    kinds = set(statuses)
    return kinds.pop() if len(kinds) == 1 else "inconclusive"  # type: ignore[return-value]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "multistart",
        "Wide networks succeed as a multi-start over their width-r* tickets",
        "lottery picture, read literally (E1, E2)",
        {
            "width-sweep": multistart_sweep,
            "subnetworks": multistart_tickets,
            "scaling": multistart_scaling,
        },
        "escapelab run scaling",
    ),
    Claim(
        "perturbation",
        "Winning tickets fail when the rest of the network is perturbed",
        "escape picture (E3)",
        {"ticket-perturbation": perturbed_tickets_fail, "ticket-dose": dose_tickets_fail},
        "escapelab run ticket-dose",
    ),
    Claim(
        "escape",
        "Width adds escape dimensions: bad minima embedded one unit wider become saddles",
        "escape picture (E4)",
        {"escape": escape_dimensions},
        "escapelab run escape",
    ),
    Claim(
        "rarity",
        "Bad minima become rare as the width grows",
        "escape picture (E5 and the symmetry counts)",
        {
            "minima-census": rare_minima_census,
            "minima-rarity": rare_minima_rarity,
            "width-sweep": rare_minima_sweep,
        },
        "escapelab run minima-census && escapelab counts",
    ),
    Claim(
        "classic",
        "Classic lottery tickets exist on real data",
        "lottery ticket hypothesis (E6)",
        {"lottery": classic_tickets},
        "escapelab run lottery",
    ),
)
"""The claims the verdict page weighs, in the order the paper makes them."""


@dataclass(frozen=True)
class ClaimVerdict:
    """A claim with the evidence of every run that bears on it and the overall status
    (``no run yet`` when the store has none)."""

    claim: Claim
    evidence: list[Evidence]

    @property
    def status(self) -> str:
        if not self.evidence:
            return "no run yet"
        return _combine([e.status for e in self.evidence])


def weigh(runs: list[tuple[str, str, Rows, dict[str, Any]]]) -> list[ClaimVerdict]:
    """Every claim of :data:`CLAIMS` against ``runs``, each given as (experiment, hash,
    summary rows, plain spec)."""
    out = []
    for claim in CLAIMS:
        evidence = []
        for name, spec_hash, rows, spec in runs:
            rule = claim.rules.get(name)
            if rule is not None:
                found = rule(rows, spec)
                evidence.append(Evidence(found.status, found.sentence, name, spec_hash))
        out.append(ClaimVerdict(claim, evidence))
    return out


__all__ = ["CLAIMS", "Claim", "ClaimVerdict", "Evidence", "weigh"]
