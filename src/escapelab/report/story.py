"""The prose of a run page that the spec decides: the question an experiment asks, its method
written from the spec, and the captions of its figures.

The questions paraphrase the mission's experiments E1–E6 (Martinelli, Şimşek, Gerstner, Brea et
al. 2026, "The Puzzling Success of Overparameterization: Lottery Tickets or Escape Dimensions?";
Frankle & Carbin 2019 for the lottery ticket hypothesis). Methods are sentences built from the
spec's own values, so the page says what ran, not what the defaults are.
"""

from __future__ import annotations

from typing import Any

QUESTIONS: dict[str, str] = {
    "width-sweep": (
        "How does the probability that gradient descent reaches a global minimum grow with the "
        "student's width m, and does it grow as fast as the literal lottery picture (a "
        "multi-start over width-r* sub-networks) predicts? (E1, E2)"
    ),
    "subnetworks": (
        "Does the full network succeed when, and because, one of its width-r* sub-networks "
        "would succeed alone from the same initial weights? (E2, the contingency table)"
    ),
    "escape": (
        "When a bad local minimum of width r is embedded one unit wider, does it become a "
        "saddle — does the added width give gradient descent a way out? (E4)"
    ),
    "scaling": (
        "How does the probability of failure fall with width over orders of magnitude, on "
        "problems where it is neither rare nor certain at m = r*: combinatorially, as the "
        "literal lottery picture's multi-start over C(m, r*) sub-networks predicts with no "
        "free parameter, or by a constant factor per extra unit, as the escape picture "
        "suggests? (E1, E2, the decisive comparison)"
    ),
    "minima-census": (
        "How many distinct bad minima are there at each width, how large are their basins, and "
        "which Hessian indices do the critical points near them have? (E5)"
    ),
    "minima-rarity": (
        "How rare are bad minima over many teachers at widths r* − 1 … r* + 3: how many distinct "
        "ones modulo symmetry and how much basin they hold, against the distinct pieces of the "
        "global-minimum manifold reached and the counts T(r*, m) and G(r, m); and does the chance "
        "that a critical point has no negative Hessian eigenvalue fall exponentially with the "
        "parameter count? (E5, issue 16)"
    ),
    "lottery": (
        "Do classic lottery tickets — sparse sub-networks found by iterative magnitude pruning "
        "and rewound to their initial weights — train as well as the dense network on real data, "
        "and better than their controls? (E6)"
    ),
    "ticket-perturbation": (
        "Do winning tickets keep winning when only the rest of the network is perturbed at "
        "initialization? The literal lottery picture says yes; the escape picture says the rest "
        "of the network matters. (E3)"
    ),
    "ticket-dose": (
        "How does the failure rate of winning tickets grow with the size of the perturbation of "
        "the rest of the network (scale alpha, noise sigma), where does it first depart from "
        "the noise floor, and where do the failures end — at bad minima or elsewhere? (E3, "
        "with enough tickets per dose to resolve the difference)"
    ),
    "implicit-acceleration": (
        "Does overparameterizing by depth speed up gradient descent on a convex problem — l4 "
        "regression solved by depth-2 and depth-3 linear networks against GD and adaptive "
        "methods at their best learning rates — and does the paper's end-to-end update rule "
        "(depth as a preconditioner) describe the trained factors? (Arora, Cohen & Hazan 2018)"
    ),
    "catapult": (
        "How does gradient descent on a wide two-layer network behave as the learning rate "
        "grows past 2 / lambda0: lazy, catapult (the loss rises, the curvature falls below "
        "2 / eta) or divergent, and where are the edges? (Lewkowycz et al. 2020)"
    ),
    "matrix-sensing": (
        "Does a preconditioner make overparameterized low-rank matrix sensing insensitive to the "
        "condition number and to the search rank — GD against ScaledGD(lambda) and PrecGD — and "
        "can the end point be certified globally optimal? (Xu et al. 2023; Zhang, Fattahi & "
        "Zhang 2023)"
    ),
}
"""The question each experiment answers, by experiment name."""

CAPTIONS: dict[str, str] = {
    "scaling_search.png": (
        "P(fail at m = r*) of every problem of the family (Wilson 95 % intervals, "
        "search seeds only); the shaded band is where a problem is interesting, red marks "
        "the problems chosen for the width scan."
    ),
    "scaling_rates.png": (
        "P(fail) against width on a log scale for each chosen problem: measured with Wilson "
        "95 % intervals (an open triangle at the upper bound where no failure was seen) and "
        "each law's prediction, with its AIC above the best law's. The shaded band is the "
        "overlapping-subsets lottery law carried through the interval of p measured at m = r*."
    ),
    "scaling_residuals.png": (
        "Signed deviance residual of each law at each width above r* (grey: |r| < 2, a fit "
        "within about the 5 % level); clipped at ±10."
    ),
    "p_global_vs_width.png": (
        "Share of students that reach a global minimum (black, 95 % interval) against width m, "
        "the share that ends in a bad local minimum (vermillion) and out of budget (grey), and "
        "the literal lottery predictions 1 − (1 − p)^K from p at m = r*: K = C(m, r*) "
        "overlapping subsets (purple, dashed) and K = ⌊m/r*⌋ disjoint ones (blue, dotted). The "
        "vertical line marks m = r*."
    ),
    "final_loss_by_width.png": (
        "Final loss of every student by width, coloured by the class of its endpoint; the dashed "
        "line is the tolerance below which a loss counts as a global minimum."
    ),
    "subnetwork_contingency.png": (
        "Per width, the students split into the four cells of the table 'a winning width-r* "
        "sub-network exists at init' × 'the full network succeeds'; the numbers are counts. The "
        "lottery picture puts every student on the diagonal (success with a ticket, failure "
        "without one)."
    ),
    "split_eig_min_vs_gamma.png": (
        "Smallest Hessian eigenvalue of each bad minimum split one unit wider, against the split "
        "parameter γ, coloured by the class of the splitting matrix B; a negative value is an "
        "escape dimension. Hollow markers: B's prediction disagrees with the spectrum."
    ),
    "escape_loss_curves.png": (
        "Training loss after a small perturbation of each embedded point, relative to the loss "
        "of the bad minimum it came from: runs that escaped (vermillion) fall below 1, runs that "
        "stayed (blue) do not."
    ),
    "distinct_bad_minima.png": (
        "Distinct bad minima per width (after removing the permutation and sign symmetries) and "
        "the share of seeds each one attracts."
    ),
    "hessian_index.png": (
        "Distribution of the Hessian index (number of negative eigenvalues) of the non-global "
        "critical points found, by width."
    ),
    "rarity_by_width.png": (
        "Left: share of students ending in a bad minimum against width, pooled over teachers "
        "(Wilson 95 %). Right: distinct bad minima modulo symmetry and distinct pieces of the "
        "global-minimum manifold reached (both summed over teachers), and the number of pieces of "
        "T's model modulo permutations of the student's units times the teachers, on a log "
        "axis; the dotted line marks m = r*."
    ),
    "rarity_index.png": (
        "Left: share of index 0 among the non-global critical points against the parameter count "
        "(Wilson 95 %; an open triangle at the upper bound where none was seen), for the saddle "
        "search and for the training endpoints separately, each with its fitted exp(a + b P). "
        "Right: their mean Hessian index."
    ),
    "ticket_perturbation.png": (
        "Failure rate of winning tickets (95 % intervals) against the size of the perturbation "
        "of the rest of the network, and how much the trained network still overlaps its ticket; "
        "one column per ticket kind and problem."
    ),
    "ticket_dose.png": (
        "Failure rate of winning tickets (Wilson 95 % intervals) against the dose: the rest of "
        "the network scaled by alpha (left) or given noise of size sigma (right). The grey band "
        "is the noise floor's rate and interval (the dotted line marks no perturbation); filled "
        "red points differ from the floor with a paired Newcombe 95 % interval above 0, and "
        "the dashed red line marks each arm's threshold dose. One row per ticket kind and "
        "problem."
    ),
    "symmetry_counts.png": (
        "Ratio of saddle subspaces to global-minimum subspaces, the sum over r < r* of G(r, m) "
        "divided by T(r*, m) "
        "(Şimşek et al. 2021), against the width m; above 1 saddles dominate, below 1 global "
        "minima do; the star marks the crossover."
    ),
    "landscape_spectra.png": (
        "Exact Hessian eigenvalues, in ascending order, at a bad local minimum of this run, at "
        "a saddle of the same width when one was found, and at the bad minimum split one unit "
        "wider (γ = 1/2); the axis is logarithmic on both sides of a linear band around zero. "
        "Negative eigenvalues of the split point are its escape dimensions."
    ),
    "landscape_escape_slice.png": (
        "Loss along the most negative Hessian eigenvector of the split point (the escape "
        "direction): a bad minimum at width r, one unit wider, is a saddle the loss falls away "
        "from on both sides."
    ),
    "landscape_interpolation.png": (
        "Loss on the straight line from the bad minimum (t = 0) to the best global minimum of "
        "the same width and teacher (t = 1), extrapolated past both ends (shaded); the barrier "
        "is the highest loss on [0, 1] above the chord."
    ),
    "ticket_interpolation.png": (
        "Test loss (and test accuracy, right axis) on the straight line from the dense trained "
        "network (t = 0) to its trained IMP ticket (t = 1), member 0, at the sparsest level "
        "within 1 percentage point of the dense accuracy (else the last level), extrapolated "
        "past both ends (shaded); the barrier is the highest loss on [0, 1] above the chord. A "
        "barrier near 0 puts the ticket in the dense solution's basin."
    ),
}
"""Captions of the figures the experiments write, by file name."""


def caption(filename: str) -> str:
    """The caption of the figure file ``filename``; lottery figures (one per dataset) share
    one, naming the dataset."""
    if filename in CAPTIONS:
        return CAPTIONS[filename]
    if filename.startswith("ticket_interpolation_") and filename.endswith(".png"):
        dataset = filename[len("ticket_interpolation_") : -len(".png")]
        return f"On {dataset}. " + CAPTIONS["ticket_interpolation.png"]
    if filename.startswith("lottery_") and filename.endswith(".png"):
        dataset = filename[len("lottery_") : -len(".png")]
        return (
            f"Iterative magnitude pruning on {dataset}: test accuracy at early stopping (%) of "
            "the rewound ticket (green), its mask with fresh weights (vermillion) and a random "
            "mask with the same per-layer counts (blue) against the share of weights remaining; "
            "below, the early-stopping step."
        )
    return filename.rsplit(".", 1)[0].replace("_", " ")


def _list(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def _teacher_student(spec: dict[str, Any]) -> list[str]:
    """Sentences for the teacher, the students, the loss and the training of a kit spec."""
    t, s, tr = spec["teacher"], spec["student"], spec["train"]
    teachers = spec.get("teachers", 1)
    loss = (
        "the exact population loss (Gaussian inputs, closed form)"
        if spec.get("n_samples") is None
        else f"the mean squared error on {spec['n_samples']} Gaussian samples"
    )
    refine = (
        f", then up to {tr['refine_steps']} damped Newton steps on the exact Hessian"
        if tr.get("refine_steps")
        else ""
    )
    certify = (
        f"; {tr['certify_rounds']} certification rounds (gradient ∞-norm ≤ {tr['tol_cert']:g})"
        if tr.get("certify_rounds")
        else ""
    )
    return [
        f"Teacher: r* = {t['width']} {t['activation']} units on d = {t['d']} inputs, "
        f"{t['incoming']} incoming weights (scale {t['scale']:g}), {t['outgoing']} output "
        f"weights{', with biases' if t['bias'] else ''}; "
        + (f"{teachers} teachers (seeds from {t['seed']})." if teachers > 1 else "one teacher."),
        f"Students: widths m = {_list(s['widths'])}, {s['seeds']} seeds each, {s['init']} "
        f"initialization (scale {s['init_scale']:g}).",
        f"Training on {loss}: {tr['steps']} {tr['optimizer']} steps at learning rate "
        f"{tr['lr']:g} in {tr.get('precision', 'float64')}{refine}{certify}.",
        f"Classification: a loss below {tr['tol_global']:g} is a global minimum; a critical point "
        f"(gradient norm ≤ {tr['tol_grad']:g}) with no Hessian eigenvalue below −"
        f"{tr.get('tol_eig', 0):g} × the largest is a minimum, otherwise a saddle.",
    ]


def _classifier(spec: dict[str, Any]) -> list[str]:
    """Sentences for the data, the network and the training of a classifier spec."""
    d, net, fit, imp = spec["data"], spec["net"], spec["fit"], spec["imp"]
    shape = (
        f"hidden layers {_list(net['hidden'])}"
        if net["model"] == "mlp"
        else f"{net['channels']} channels"
    )
    controls = _list(imp["controls"]) if imp["controls"] else "none"
    return [
        f"Data: {_list(d['datasets'])} ({d['n_train']} training and {d['n_test']} test examples "
        f"where the dataset is generated).",
        f"Network: {net['model']} with {shape}, {net['activation']} activations; "
        f"{spec['seeds']} seeds per dataset.",
        f"Training: {fit['steps']} {fit['optimizer']} steps at learning rate {fit['lr']:g}, "
        f"batch {fit['batch_size']}, evaluated every {fit['eval_every']} steps.",
        f"Pruning: {imp['levels']} rounds of {imp['scope']} magnitude pruning at "
        f"{imp['rate']:.0%} per round, rewinding to {imp['rewind']}"
        + (f" (step {imp['rewind_step']})" if imp["rewind"] == "step" else "")
        + f"; controls: {controls}.",
    ]


def _relu_spurious(spec: dict[str, Any]) -> list[str]:
    """Sentences for the Safran-Shamir setting of ``relu-spurious``."""
    return [
        f"Teacher: k orthonormal ReLU units in d = k inputs (k = {_list(spec['ks'])}), output "
        "weights one; exact population loss (arc-cosine kernel).",
        f"Students: n = k + {_list(spec['extra'])} units, output weights held at one, Xavier "
        f"initialization, {spec['inits']} initializations per (k, n).",
        f"Training: gradient descent with step {spec['step_scale']:g}/k for at most "
        f"{spec['steps']} steps, until the gradient norm is {spec['handoff_grad']:g}; then up "
        f"to {spec['refine_steps']} damped Newton steps and {spec['certify_rounds']} "
        f"certification rounds (gradient ∞-norm ≤ {spec['tol_cert']:g}).",
        f"Classification: a loss below {spec['tol_global']:g} is a global minimum; a certified "
        f"critical point above it with no Hessian eigenvalue below −{spec['tol_eig']:g} × the "
        "largest is a spurious local minimum.",
    ]


def _scaling(spec: dict[str, Any]) -> list[str]:
    """Sentences for the stages of ``scaling``."""
    f, search, w, e2 = spec["family"], spec["search"], spec["widths"], spec["subnetworks"]
    tr = spec["train"]
    loss = "exact population loss" if spec["n_samples"] is None else f"{spec['n_samples']} samples"
    return [
        f"Family: teachers of r* = {_list(f['r_stars'])} {_list(f['activations'])} units on "
        f"d = {_list(f['ds'])} Gaussian inputs, {_list(f['incoming'])} incoming weights "
        f"(orthonormal only where r* ≤ d), {f['teachers']} teacher seed(s) each; {loss}.",
        f"Search: {search['seeds']} students of width r* per problem; up to "
        f"{search['problems']} problems with P(fail) in [{search['low']:g}, {search['high']:g}] "
        "are scanned, different activations first, then the rate nearest 1/2.",
        f"Widths r* … {w['factor']} r*; each width gets seeds in stages until it has seen "
        f"{w['min_failures']} failures, or the upper end of its Wilson 95 % interval is below "
        f"{w['target_upper']:g}, or it has {w['max_seeds']} seeds.",
        f"Failure: a certified endpoint of class {_list(spec['failures'])}; students out of "
        "budget are neither success nor failure.",
        f"Training: {tr['steps']} Adam steps, then damped Newton and up to "
        f"{tr['certify_rounds']} certification rounds (gradient ∞-norm ≤ {tr['tol_cert']:g}).",
        f"E2: the first {e2['seeds']} students of every width above r* have their width-r* "
        f"sub-networks (at most {e2['max_subsets']}, sampled beyond) trained alone.",
        "Laws: scored on the widths above r* by binomial likelihood and AIC with p from m = r*.",
    ]


def _tickets(spec: dict[str, Any]) -> list[str]:
    """Sentences for the ticket kinds and perturbations of ``ticket-perturbation`` and
    ``ticket-dose``."""
    p = spec["perturb"]
    perturbations = (["re-draw"] if p["redraw"] else []) + [
        *(f"scale by {a:g}" for a in p["scales"]),
        *(f"add noise of size {s:g}" for s in p["noise"]),
    ]
    out = [
        f"Ticket kinds: {_list(spec['kinds'])}. Perturbations of everything outside the "
        f"ticket: {_list(perturbations) or 'none'}."
    ]
    if "neuron" in spec["kinds"]:
        out += ["Neuron-level tickets. " + " ".join(_teacher_student(spec["neuron"]))]
    if "weight" in spec["kinds"]:
        w = spec["weight"]
        out += [
            "Weight-level tickets. "
            + " ".join(_classifier(w))
            + f" A ticket fails when its accuracy falls more than {w['margin']:.0%} "
            f"below the unperturbed run ({w['success_metric']} accuracy)."
        ]
    return out


def _settings(spec: dict[str, Any], prefix: str = "") -> list[str]:
    """``key = value`` for every field of a plain spec, nested sections dotted."""
    out = []
    for key, value in spec.items():
        if isinstance(value, dict):
            out += _settings(value, f"{prefix}{key}.")
        else:
            shown = _list(value) if isinstance(value, list) else value
            out.append(f"{prefix}{key} = {shown}")
    return out


def method(name: str, spec: dict[str, Any]) -> list[str]:
    """The method section of experiment ``name`` as sentences, from the plain spec ``spec``
    (:func:`escapelab.config.to_dict`); experiments without their own sentences get their
    settings listed."""
    if name == "relu-spurious":
        return _relu_spurious(spec)
    if name == "scaling":
        return _scaling(spec)
    if name not in ("lottery", "ticket-perturbation", "ticket-dose") and "teacher" not in spec:
        return ["Settings: " + "; ".join(_settings(spec)) + "."]
    if name == "lottery":
        return _classifier(spec)
    if name == "ticket-dose":
        return [
            *_tickets(spec),
            "Floor: at the neuron level the unperturbed network (training is deterministic), at "
            "the weight level the unperturbed network retrained with another batch order. A "
            "neuron-level failure is a certified local minimum, saddle or flat channel; runs out "
            "of budget or diverged are counted apart. Per dose: the failure rate with its "
            "Wilson 95 % interval and its difference from the floor with Newcombe's hybrid "
            "score interval, paired per ticket (every ticket runs under the floor and under "
            f"every dose), each against a target half-width of {spec['target_half_width']:g}; "
            "an arm's threshold is its first dose whose difference lies above 0.",
        ]
    if name == "ticket-perturbation":
        return _tickets(spec)
    out = _teacher_student(spec)
    if name == "escape":
        out.append(
            f"Embedding: every bad minimum (at most {spec['max_minima']} per task) is split one "
            f"unit wider at γ = {_list(spec['gammas'])} and given a unit with zero output "
            f"weight; each embedded point is perturbed by ε = {spec['epsilon']:g} along "
            f"{spec['n_random']} random direction(s) and its most negative eigenvector, then "
            "trained on."
        )
    elif name == "minima-census":
        out.append(
            f"Search: {spec['search_starts']} gradient-norm minimisations per non-global "
            f"endpoint from perturbations of size {spec['search_radius']:g}; minima are the same "
            f"when their outputs on {spec['n_probes']} probe inputs differ by less than "
            f"{spec['tol_function']:g}."
        )
    elif name == "minima-rarity":
        out.append(
            f"Search: {spec['search_starts']} gradient-norm minimisations per student from "
            f"perturbations of size {spec['search_radius']:g} around its endpoint; minima are the "
            f"same when their outputs on {spec['n_probes']} probe inputs differ by less than "
            f"{spec['tol_function']:g}; a global minimum's piece is read off its units matched to "
            f"the teacher's within {spec['tol_piece']:g} (relative); the index-decay slope's "
            f"interval resamples teachers {spec['bootstrap']} times."
        )
    elif name == "subnetworks":
        out.append(
            f"Sub-networks: every width-r* subset of hidden units (at most "
            f"{spec['max_subsets']}, sampled beyond) is trained alone from the student's initial "
            "weights."
        )
    return [s for s in out if s]


__all__ = ["CAPTIONS", "QUESTIONS", "caption", "method"]
