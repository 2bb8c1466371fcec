"""Findings as sentences computed from an experiment's summary rows, with their intervals.

Each experiment gets a function ``rows -> list[str]``; the first sentence is the run's one-line
finding on the index page. Every number in a sentence is read from the summary (the same rows
the tables show), so a sentence never says more than the table does; intervals are the ones the
summaries compute (Wilson 95 % for binomial shares, bootstrap over teachers for pooled rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from escapelab.theory.multistart import wilson_interval

Rows = list[dict[str, Any]]


def share(p: float, lo: float | None = None, hi: float | None = None) -> str:
    """``0.54 [0.40, 0.67]``: a share with its interval, two decimals (nan: "–")."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    text = f"{p:.2f}"
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.2f}, {hi:.2f}]"
    return text


def _trend(a: float, b: float) -> str:
    return "rises" if b > a else "falls" if b < a else "stays"


def _main_rows(rows: Rows) -> tuple[Rows, str]:
    """The pooled rows when there are several teachers (and a note saying so), else all."""
    pooled = [r for r in rows if r.get("teacher") == "pooled"]
    if pooled:
        teachers = pooled[0].get("teachers", "several")
        note = f" (mean over {teachers} teachers, intervals over teachers)"
        return pooled, note
    return rows, ""


def width_sweep(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """P(global) from the narrowest to the widest student, against the lottery predictions;
    P(bad local minimum); the share out of budget."""
    main, note = _main_rows(rows)
    if not main:
        return ["No student has finished yet."]
    first, last = main[0], main[-1]
    out = [
        f"P(global minimum) {_trend(first['p_global'], last['p_global'])} from "
        f"{share(first['p_global'], first['ci_low'], first['ci_high'])} at m = {first['width']} "
        f"to {share(last['p_global'], last['ci_low'], last['ci_high'])} at m = "
        f"{last['width']}{note}."
    ]
    r_star = spec["teacher"]["width"]
    wider = [r for r in main if r["width"] > r_star and not math.isnan(r["pred_subsets"])]
    if wider:
        w = wider[-1]
        where = (
            "above the measured interval"
            if w["pred_subsets"] > w["ci_high"]
            else "below it"
            if w["pred_subsets"] < w["ci_low"]
            else "inside it"
        )
        out.append(
            f"From p = {share(next(r for r in main if r['width'] == r_star)['p_global'])} at "
            f"m = r* = {r_star}, the literal lottery picture predicts P = {w['pred_subsets']:.2f} "
            f"at m = {w['width']} with C({w['width']}, {r_star}) overlapping subsets and "
            f"{w['pred_disjoint']:.2f} with ⌊{w['width']}/{r_star}⌋ disjoint ones; the "
            f"overlapping prediction lies {where}"
            + (
                f" ({w['not_converged']} of {w['n']} students ran out of budget there)."
                if w.get("not_converged")
                else "."
            )
        )
    elif not any(r["width"] == r_star for r in main):
        out.append(f"No student has width r* = {r_star}, so the lottery predictions are not drawn.")
    out.append(
        f"P(bad local minimum) {_trend(first['p_bad_min'], last['p_bad_min'])} from "
        f"{share(first['p_bad_min'], first['bad_ci_low'], first['bad_ci_high'])} to "
        f"{share(last['p_bad_min'], last['bad_ci_low'], last['bad_ci_high'])}."
    )
    n = sum(r["n"] for r in main)
    stuck = sum(r["not_converged"] for r in main)
    if stuck:
        out.append(
            f"{stuck} of {n} students ran out of budget before an endpoint; they count as "
            "neither a success nor a bad minimum."
        )
    return out


def subnetworks(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """How often the ticket at init matched the full network's outcome, width by width."""
    main, note = _main_rows(rows)
    if not main:
        return ["No student has finished yet."]
    n = sum(r["n"] for r in main)
    diagonal = sum(r["success_with_ticket"] + r["failure_without_ticket"] for r in main)
    out = [
        f"A winning width-r* sub-network at init matched the full network's outcome in "
        f"{diagonal} of {n} students{note}: {sum(r['success_without_ticket'] for r in main)} "
        f"succeeded without a ticket and {sum(r['failure_with_ticket'] for r in main)} failed "
        "with one."
    ]
    for r in main:
        out.append(
            f"At m = {r['width']} the full network succeeded in "
            f"{r['success_with_ticket'] + r['success_without_ticket']} of {r['n']} students "
            f"({share(r['p_full_success'], r['ci_low'], r['ci_high'])}); a ticket existed in "
            f"{share(r['p_ticket_exists'])} of them; {r['full_bad_min']} full networks ended in a "
            f"bad minimum and {r['full_not_converged']} out of budget."
        )
    return out


def escape(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Per source width: bad minima found, and per embedding the share of saddles and the
    escape rate over all gammas."""
    out: list[str] = []
    for r in sorted({row["source_width"] for row in rows}):
        mine = [row for row in rows if row["source_width"] == r]
        head = mine[0]
        found = (
            f"width {r}: {head['bad_minima']} bad minima among {head['sources']} students "
            f"({head['sources_not_converged']} out of budget)"
        )
        runs = [row for row in mine if row.get("runs")]
        if not runs:
            out.append(f"At {found}; nothing was embedded.")
            continue
        parts = []
        for emb in dict.fromkeys(row["embedding"] for row in runs):
            these = [row for row in runs if row["embedding"] == emb]
            n = sum(row["runs"] for row in these)
            saddles = round(sum(row["saddle_measured"] * row["runs"] for row in these))
            escaped = round(sum(row["escape_rate"] * row["runs"] for row in these))
            lo, hi = wilson_interval(escaped, n)
            what = "split" if emb == "split" else "given a unit with zero output weight"
            parts.append(
                f"{what}: {saddles} of {n} embedded points are saddles, escape rate "
                f"{share(escaped / n, lo, hi)}"
            )
        out.append(f"At {found}; embedded at width {r + 1}, " + "; ".join(parts) + ".")
    return out or ["No student has finished yet."]


def minima_census(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Share of seeds in bad minima and distinct minima from the narrowest to the widest."""
    if not rows:
        return ["No student has finished yet."]
    first, last = rows[0], rows[-1]
    out = [
        f"The share of seeds ending in a bad minimum {_trend(_bad(first), _bad(last))} from "
        f"{share(_bad(first))} at m = {first['width']} to {share(_bad(last))} at m = "
        f"{last['width']}; distinct bad minima: {first['distinct_bad_minima']} → "
        f"{last['distinct_bad_minima']}."
    ]
    for r in rows:
        basins = ", ".join(f"{b:.2f}" for b in r["basin_shares"]) or "none"
        index = ", ".join(f"index {k}: {v}" for k, v in r["index_counts"].items()) or "none"
        out.append(
            f"At m = {r['width']}: {r['bad_minima']} of {r['seeds']} seeds in bad minima, "
            f"{r['distinct_bad_minima']} distinct (basins {basins}); "
            f"{r['critical_points_found']} non-global critical points found ({index})."
        )
    return out


def _ratio(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.2g}"


def minima_rarity(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Bad-minimum share and distinct counts from the narrowest to the widest width, pooled
    over teachers; distinct global pieces against the possible ones and T; the index fit."""
    widths = [r for r in rows if r["role"] == "width"]
    if not widths:
        return ["No student has finished yet."]
    first, last = widths[0], widths[-1]
    out = [
        f"Over {first['teachers']} teachers, the share of students ending in a bad minimum "
        f"{_trend(first['p_bad_min'], last['p_bad_min'])} from "
        f"{share(first['p_bad_min'], first['bad_ci_low'], first['bad_ci_high'])} at m = "
        f"{first['width']} to {share(last['p_bad_min'], last['bad_ci_low'], last['bad_ci_high'])}"
        f" at m = {last['width']}; distinct bad minima (summed over teachers): "
        f"{first['distinct_bad_minima']} → {last['distinct_bad_minima']}."
    ]
    for r in widths:
        text = (
            f"At m = {r['width']}: {r['bad_minima']} of {r['seeds']} students in "
            f"{r['distinct_bad_minima']} distinct bad minima ({r['teachers_with_bad']} of "
            f"{r['teachers']} teachers have one), {r['global_min']} in "
            f"{r['distinct_global_pieces']} distinct global pieces"
        )
        if r["T"]:
            text += (
                f" ({r['piece_labels']} labels over all teachers, {r['labels_outside_T']} of them "
                f"with silent units outside T's model; {r['piece_orbits']} possible in T's model "
                f"modulo permutations; T = {r['T']:,} labelled pieces, G = {r['G']:,}, G/T = "
                f"{r['G_over_T']:.2g})"
            )
        else:
            text += f" (m < r*: no global minimum exists; G = {r['G']:,})"
        text += f"; bad/good = {_ratio(r['bad_good_ratio'])}."
        out.append(text)
    search = [r for r in rows if r["role"] == "index" and r["source"] == "search"]
    if search:
        out.append(
            f"The mean Hessian index of the non-global saddle-search points "
            f"{_trend(search[0]['mean_index'], search[-1]['mean_index'])} from "
            f"{search[0]['mean_index']:.2f} at P = {search[0]['n_params']} to "
            f"{search[-1]['mean_index']:.2f} at P = {search[-1]['n_params']}; the share of index 0 "
            f"from {share(search[0]['p_index_zero'], search[0]['ci_low'], search[0]['ci_high'])} "
            f"to {share(search[-1]['p_index_zero'], search[-1]['ci_low'], search[-1]['ci_high'])}."
        )
    for fit in (r for r in rows if r["role"] == "fit"):
        what = {
            "search": "saddle-search points",
            "endpoint": "training endpoints",
            "search_wide": f"saddle-search points at m ≥ r* = {spec['teacher']['width']}",
        }[fit["source"]]
        if math.isnan(fit["slope"]):
            out.append(f"Index fit on {what}: {fit['verdict']}.")
            continue
        out.append(
            f"Index fit on {what} ({fit['points']} non-global critical points, "
            f"{fit['index_zero']} of index 0, P = {', '.join(map(str, fit['n_params']))}): "
            f"log P(index 0) changes by {fit['slope']:.3f} "
            f"[{fit['slope_low']:.3f}, {fit['slope_high']:.3f}] per parameter (bootstrap over "
            f"teachers), deviance test p = {fit['gof_p']:.2g}; the exponential-decay proposal is "
            f"{fit['verdict']}."
        )
    return out


_LAW_WORDS = {
    "lottery_subsets": "the lottery law over overlapping sub-networks (no free parameter)",
    "lottery_disjoint": "the lottery law over disjoint sub-networks (no free parameter)",
    "lottery_fitted": "the overlapping-subsets law with its base fitted",
    "escape": "the escape law (each extra unit divides P(fail) by a constant factor)",
    "free": "no law (every width its own rate)",
}


def scaling(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Per chosen problem: P(fail) from m = r* to the widest width, the law AIC prefers and how
    far behind the combinatorial lottery law is; the widths whose budget ran out; E2."""
    search = [r for r in rows if r["role"] == "search"]
    chosen = [r["problem"] for r in search if r["chosen"]]
    band = f"[{spec['search']['low']}, {spec['search']['high']}]"
    if not chosen:
        return [
            f"No problem of the {len(search)} searched had P(fail at m = r*) in {band}; "
            "widen the family."
            if search
            else "No student has finished yet."
        ]
    out = []
    for name in chosen:
        widths = [r for r in rows if r["role"] == "width" and r["problem"] == name]
        laws = {r["law"]: r for r in rows if r["role"] == "law" and r["problem"] == name}
        first, last = widths[0], widths[-1]
        text = (
            f"On {name}, P(fail) {_trend(first['p_fail'], last['p_fail'])} from "
            f"{share(first['p_fail'], first['ci_low'], first['ci_high'])} at m = "
            f"{first['width']} to {share(last['p_fail'], last['ci_low'], last['ci_high'])} at "
            f"m = {last['width']} ({last['failures']} failures in {last['certified']})"
        )
        if laws:
            best = min(laws.values(), key=lambda r: (r["aic"], r["k"]))
            text += f"; by AIC the best law is {_LAW_WORDS[best['law']]}"
            if best["law"] == "escape":
                text += (
                    f", beta = {best['parameter']:.2f} [{best['parameter_low']:.2f}, "
                    f"{best['parameter_high']:.2f}] per extra unit"
                )
            lottery = laws["lottery_subsets"]
            if best["law"] != "lottery_subsets":
                text += (
                    f", and the overlapping-subsets lottery law is {lottery['delta_aic']:.3g} "
                    f"AIC units behind (deviance {lottery['deviance']:.3g} over "
                    f"{lottery['widths_scored']} widths)"
                )
        out.append(text + ".")
        short = [r["width"] for r in widths if r["stop"] == "budget"]
        if short:
            out.append(
                f"On {name}, the seed budget ran out before 20 failures or the target bound at "
                f"m = {', '.join(map(str, short))}: those rates are less resolved."
            )
        e2 = [r for r in widths if r.get("e2_n")]
        if e2:
            n = sum(r["e2_n"] for r in e2)
            against = round(sum(r["ticket_but_failed"] * r["e2_n"] for r in e2))
            lucky = round(sum(r["no_ticket_but_succeeded"] * r["e2_n"] for r in e2))
            sampled = " of those checked" if any(r["e2_sampled"] for r in e2) else ""
            out.append(
                f"On {name}, of {n} students checked for winning width-r* sub-networks, "
                f"{against} failed although one existed ({_rate(against, n)}) and {lucky} "
                f"succeeded although none{sampled} did ({_rate(lucky, n)})."
            )
    return out


def _rate(k: int, n: int) -> str:
    """k / n with its Wilson 95 % interval."""
    return share(k / n, *wilson_interval(k, n))


def _bad(row: dict[str, Any]) -> float:
    return row["bad_minima"] / row["seeds"] if row["seeds"] else math.nan


def _metric(row: dict[str, Any]) -> tuple[str, float, str]:
    """(what, value, unit) of a lottery row: test accuracy in %, or the test loss on
    regression data."""
    if math.isnan(row["test_acc_es"]):
        return "test loss", row["test_loss_es"], ""
    return "test accuracy", 100 * row["test_acc_es"], " %"


def lottery(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Per dataset: dense accuracy, and at the sparsest round the ticket against its controls."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        mine = [r for r in rows if r["dataset"] == dataset]
        dense = next((r for r in mine if r["prune_level"] == 0 and r["role"] == "ticket"), None)
        last = max(r["prune_level"] for r in mine)
        if dense is None or last == 0:
            out.append(f"On {dataset} no pruning round has finished yet.")
            continue
        what, base, unit = _metric(dense)
        sparse = {r["role"]: r for r in mine if r["prune_level"] == last}
        parts = [
            f"{name} {_metric(sparse[role])[1]:.3g}{unit}"
            for role, name in (
                ("ticket", "the rewound ticket"),
                ("reinit", "its mask re-initialized"),
                ("random_mask", "a random mask"),
            )
            if role in sparse
        ]
        out.append(
            f"On {dataset} the dense network reaches {what} {base:.3g}{unit}; with "
            f"{100 * sparse['ticket']['density']:.3g} % of the weights kept (round {last}), "
            + ", ".join(parts)
            + "."
        )
    return out or ["No network has finished yet."]


def ticket_perturbation(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Per ticket kind and problem: failures unperturbed and under the worst perturbation."""
    out = []
    for kind, problem in dict.fromkeys((r["ticket_kind"], r["problem"]) for r in rows):
        mine = [r for r in rows if r["ticket_kind"] == kind and r["problem"] == problem]
        base = next((r for r in mine if r["perturbation"] == "none"), None)
        tested = [r for r in mine if r["perturbation"] != "none" and r["n"]]
        head = f"{kind.capitalize()}-level tickets on {problem}"
        if not tested or base is None or not base["n"]:
            out.append(f"{head}: no winning ticket to perturb.")
            continue
        worst = max(tested, key=lambda r: r["failure_rate"])
        out.append(
            f"{head}: unperturbed, {base['failures']} of {base['n']} winning tickets fail "
            f"({share(base['failure_rate'], base['ci_low'], base['ci_high'])}); under "
            f"'{worst['label']}', {worst['failures']} of {worst['n']} fail "
            f"({share(worst['failure_rate'], worst['ci_low'], worst['ci_high'])})."
        )
    return out or ["No ticket has been tested yet."]


_FLOORS = {"neuron": "unperturbed", "weight": "unperturbed, another batch order"}


def _classes(kinds: dict[str, int]) -> str:
    """``12 local_min, 3 saddle``: failure classes by count, most frequent first."""
    return ", ".join(f"{v} {k}" for k, v in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))


def ticket_dose(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Per ticket kind and problem: the floor, the first dose of each arm whose difference from
    the floor lies above 0 (or the largest difference when none does), how many doses meet the
    target half-width, and where the failures end."""
    out = []
    target = spec.get("target_half_width", 0.05)
    for kind, problem in dict.fromkeys((r["ticket_kind"], r["problem"]) for r in rows):
        mine = [r for r in rows if (r["ticket_kind"], r["problem"]) == (kind, problem)]
        floor = next((r for r in mine if r["role"] == "floor"), None)
        doses = [r for r in mine if r["role"] == "dose" and r["n"]]
        teachers = mine[0].get("teachers")
        head = f"{kind.capitalize()}-level tickets on {problem}" + (
            f" ({teachers} teachers)" if teachers and teachers > 1 else ""
        )
        if floor is None or not floor["n"] or not doses:
            out.append(f"{head}: no winning ticket to perturb.")
            continue
        text = (
            f"{head}: the floor ({_FLOORS[kind]}) is {floor['failures']} failures of "
            f"{floor['n']} ({share(floor['failure_rate'], floor['ci_low'], floor['ci_high'])})"
        )
        firsts = [r for r in mine if r["role"] == "threshold" and r["threshold"] is not None]
        if firsts:
            text += "; failure departs from it first at " + "; ".join(
                f"{t['label']} ({share(t['failure_rate'], t['ci_low'], t['ci_high'])}, "
                f"{t['diff']:+.2f} [{t['diff_low']:+.2f}, {t['diff_high']:+.2f}] above the floor)"
                for t in firsts
            )
        else:
            top = max(doses, key=lambda r: r["diff"])
            text += (
                f"; no dose departs from it (largest difference {top['diff']:+.2f} "
                f"[{top['diff_low']:+.2f}, {top['diff_high']:+.2f}] at {top['label']})"
            )
        below = [r for r in doses if r["diff_high"] < 0]
        if below:  # a dose can also lower failure: say where, with the lowest
            low = min(below, key=lambda r: r["diff"])
            text += (
                f"; {len(below)} {'dose lowers' if len(below) == 1 else 'doses lower'} it "
                f"({', '.join(r['label'] for r in below)}; most at {low['label']}, "
                f"{low['diff']:+.2f} [{low['diff_low']:+.2f}, {low['diff_high']:+.2f}])"
            )
        out.append(text + ".")
        met = sum(r["resolved"] for r in doses)
        diff_met = sum(r["diff_resolved"] for r in doses)
        widest = max(doses, key=lambda r: r["diff_half_width"])
        ns = sorted(r["n"] for r in doses)
        per_dose = f"{ns[0]}" if ns[0] == ns[-1] else f"{ns[0]}–{ns[-1]}"
        paired = all(r.get("diff_method") == "paired" for r in doses)
        out.append(
            f"{head}: {met} of {len(doses)} doses {'meets' if met == 1 else 'meet'} the "
            f"±{target:g} target for the rate's 95 % interval and {diff_met} for the "
            f"{'paired ' if paired else ''}difference's (widest "
            f"±{widest['diff_half_width']:.2f} at {widest['label']}; "
            f"{per_dose} tickets per dose)."
        )
        kinds: dict[str, int] = {}
        for r in doses:
            for k, v in r["failure_kinds"].items():
                kinds[k] = kinds.get(k, 0) + v
        undecided = sum(r["undecided"] for r in doses)
        if kinds or undecided:
            out.append(
                f"{head}: under the doses, {sum(kinds.values())} runs fail"
                + (f" ({_classes(kinds)})" if kinds else "")
                + (
                    f"; {undecided} ran out of budget or diverged, counted apart."
                    if undecided
                    else "; none ran out of budget."
                )
            )
    return out or ["No ticket has been tested yet."]


def relu_spurious(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Per overparameterization n - k: the share of initializations ending at a spurious
    minimum at each k, with what ran out of budget or diverged said apart."""
    out = []
    for extra in sorted({r["n"] - r["k"] for r in rows}):
        mine = sorted((r for r in rows if r["n"] - r["k"] == extra), key=lambda r: r["k"])
        parts = [
            f"k = {r['k']}: {r['local_min']} of {r['inits']} "
            f"({share(r['p_spurious'], r['spurious_ci_low'], r['spurious_ci_high'])})"
            + (f", {r['not_converged']} out of budget" if r["not_converged"] else "")
            + (f", {r['diverged']} diverged" if r["diverged"] else "")
            for r in mine
        ]
        label = "n = k" if extra == 0 else f"n = k + {extra}"
        out.append(f"{label}: spurious minima in " + "; ".join(parts) + ".")
    return out


def _iters(row: dict[str, Any], steps: int | None = None) -> str:
    """``371 (seeds 363-379)``: a median iteration count with the seeds' range; ``> N`` when
    the median run never reached the target within ``steps``."""
    med = row["iters_median"]
    text = f"> {steps:,}" if steps is not None and med > steps else f"{med:,.0f}"
    return f"{text} (seeds {row['iters_min']:,.0f}–{row['iters_max']:,.0f})"


def implicit_acceleration(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Per data set and p: the fastest depth-N net against GD and the fastest depth-1 method,
    each at its best learning rate; then the end-to-end rule's deviation."""
    best = [r for r in rows if r.get("kind") == "best"]
    steps, eps = spec.get("steps"), spec.get("eps", 0.0)
    out = []
    for dataset, p in dict.fromkeys((r["dataset"], r["p"]) for r in best):
        at = {r["method"]: r for r in best if (r["dataset"], r["p"]) == (dataset, p)}
        deep = [r for m, r in at.items() if m.startswith("depth")]
        shallow = [r for m, r in at.items() if not m.startswith("depth")]
        if not deep or "gd" not in at:
            continue
        d = min(deep, key=lambda r: r["iters_median"])
        rival = min(shallow, key=lambda r: r["iters_median"])
        out.append(
            f"On {dataset} with the l{p:g} loss, {d['method']} reaches relative excess loss "
            f"{eps:g} in {_iters(d, steps)} iterations against {_iters(at['gd'], steps)} for GD "
            f"(×{at['gd']['iters_median'] / d['iters_median']:.2f}); the fastest depth-1 method, "
            f"{rival['method']}, needs {_iters(rival, steps)}."
        )
    rule = [r for r in rows if r.get("claim", "").startswith("end-to-end")]
    if rule:
        worst = max(rule, key=lambda r: r["measured"])
        out.append(
            "The end-to-end update rule (depth as the preconditioner |w|^(2-2/N)(I + (N-1)uu^T)) "
            f"matches the trained factors' moves to a relative deviation of at most "
            f"{worst['measured']:.1e} at the smallest learning rate."
        )
    return out or ["No run has finished yet."]


def catapult(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Per activation: the measured lazy-catapult edge and maximal rate against 2 and 4 (in
    units of 1 / lambda0), with the share of runs on each side (Wilson 95 %)."""
    out = []
    for b in (r for r in rows if r.get("kind") == "boundary"):
        act = b["activation"]
        at = {r["rate"]: r for r in rows if r.get("kind") == "rate" and r["activation"] == act}

        def side(rate: float, phase: str, at=at) -> str:
            r = at.get(rate)
            if r is None:
                return ""
            text = share(r[f"p_{phase}"], r[f"{phase}_ci_low"], r[f"{phase}_ci_high"])
            return f" ({phase} share {text} at {rate:g})"

        out.append(
            f"Two-layer {act} net: most runs are lazy up to eta·lambda0 = {b['lazy_edge_low']:g}"
            f"{side(b['lazy_edge_low'], 'lazy')} and catapult from {b['lazy_edge_high']:g}"
            f"{side(b['lazy_edge_high'], 'catapult')} (theory: 2); most converge up to "
            f"{b['max_rate_low']:g} and diverge from {b['max_rate_high']:g}"
            f"{side(b['max_rate_high'], 'divergent')} (the linear model's theory: 4)."
        )
    return out or ["No run has finished yet."]


def matrix_sensing(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Iterations to the target error at the smallest and largest kappa for each method (median
    and the seeds' range), then the certificate's share (Wilson 95 %)."""
    points = [r for r in rows if r.get("kind") == "point" and r["r"] == spec.get("rank")]
    if not points:
        return ["No run has finished yet."]
    steps, eps = spec.get("max_iters"), spec.get("eps", 0.0)
    lo, hi = min(r["kappa"] for r in points), max(r["kappa"] for r in points)
    parts = []
    for method in dict.fromkeys(r["method"] for r in points):
        ends = {r["kappa"]: r for r in points if r["method"] == method}
        if lo in ends and hi in ends:
            parts.append(
                f"{method} {_iters(ends[lo], steps)} at kappa = {lo:g} and "
                f"{_iters(ends[hi], steps)} at kappa = {hi:g}"
            )
    out = [
        f"Iterations to relative error {eps:g} (r = {spec.get('rank')}): " + "; ".join(parts) + "."
    ]
    for r in rows:
        if r.get("kind") == "claim" and r["claim"].startswith("PrecGD's end points"):
            runs = [p for p in rows if p.get("kind") == "point" and p["method"] == "precgd"]
            n = sum(p["seeds"] for p in runs)
            k = sum(p["certified"] for p in runs)
            a, b = wilson_interval(k, n)
            out.append(
                f"The duality-gap certificate proves {k} of {n} PrecGD end points within "
                f"eps·|M*|² of the global optimum (share {share(k / n, a, b)})."
            )
    return out


def claims(rows: Rows, spec: dict[str, Any]) -> list[str]:
    """Rows that state a claim (``claim``, ``holds``): whether each held, as measured."""
    stated = [r for r in rows if "claim" in r and "holds" in r]
    if not stated:
        return [f"{len(rows)} summary rows."]
    return [
        f"{r['claim']}"
        + (f" ({r['dataset']})" if "dataset" in r else "")
        + (": holds." if r["holds"] else ": does not hold.")
        for r in stated
    ]


def count_check_findings(verdicts: Rows) -> list[str]:
    """One sentence per activation from the verdicts of
    :func:`escapelab.landscape.critical_subspaces.construction_verdicts`: which constructions
    stay critical at global and at non-global critical points, with the largest gradient of the
    verified ones and the smallest of the refuted ones."""
    out = []
    for activation in dict.fromkeys(v["activation"] for v in verdicts):
        parts = []
        for kind in ("global", "non-global"):
            mine = [v for v in verdicts if (v["activation"], v["kind"]) == (activation, kind)]
            ok = [v for v in mine if v["verdict"] == "verified"]
            bad = [v for v in mine if v["verdict"] != "verified"]
            text = f"at {kind} points " + (
                f"{', '.join(v['construction'] for v in ok)} "
                f"{'stays' if len(ok) == 1 else 'stay'} critical (max |grad| "
                f"{max(v['max_grad'] for v in ok):.1e})"
                if ok
                else "no construction stays critical"
            )
            if bad:
                text += (
                    f" and {', '.join(v['construction'] for v in bad)} "
                    f"{'does' if len(bad) == 1 else 'do'} not (|grad| up to "
                    f"{max(v['max_grad'] for v in bad):.1e}, at least "
                    f"{min(v['min_grad'] for v in bad):.1e})"
                )
            if mine:
                parts.append(text)
        cases = sum(v["cases"] for v in verdicts if v["activation"] == activation)
        out.append(f"{activation}, {cases} embedded subspaces: " + "; ".join(parts) + ".")
    return out


def symmetry_counts(crossovers: dict[int, int]) -> str:
    """The counts' finding: up to which width saddle subspaces outnumber global-minimum ones,
    per teacher width r*, in the model that counts only measured-critical constructions."""
    where = [
        f"up to m = {m - 1} for r* = {r}" if m > r else f"at no width for r* = {r}"
        for r, m in crossovers.items()
    ]
    return (
        "Counting only constructions measured to stay critical (duplication at every critical "
        "point; zero-output units and cancelling groups at global minima only), saddle "
        f"subspaces outnumber global-minimum subspaces {'; '.join(where)}."
    )


FINDINGS: dict[str, Callable[[Rows, dict[str, Any]], list[str]]] = {
    "relu-spurious": relu_spurious,
    "width-sweep": width_sweep,
    "subnetworks": subnetworks,
    "escape": escape,
    "minima-census": minima_census,
    "minima-rarity": minima_rarity,
    "scaling": scaling,
    "lottery": lottery,
    "ticket-perturbation": ticket_perturbation,
    "ticket-dose": ticket_dose,
    "implicit-acceleration": implicit_acceleration,
    "catapult": catapult,
    "matrix-sensing": matrix_sensing,
}
"""The findings of each experiment, by name: ``(summary rows, plain spec) -> sentences``."""


def findings(name: str, rows: Rows, spec: dict[str, Any]) -> list[str]:
    """The findings of experiment ``name`` from its summary ``rows`` and plain ``spec``."""
    if name not in FINDINGS:
        return claims(rows, spec)
    return FINDINGS[name](rows, spec)


__all__ = ["FINDINGS", "count_check_findings", "findings", "share", "symmetry_counts"]
