"""A store holding every experiment at a tiny size, for the report's tests (about 20 s on 2 cores).

The runs are far too small to mean anything; they give every page, table and figure of the report
something to show, including rows of different kinds in one summary (neuron- and weight-level
tickets; pooled and per-teacher rows).
"""

from __future__ import annotations

from pathlib import Path

from escapelab.runner.sweep import run

TEACHER_STUDENT = {
    "teacher": {"width": 2, "seed": 1},
    "train": {"steps": 300, "refine_steps": 10},
}
TINY_FIT = {"steps": 40, "eval_every": 10, "batch_size": 50}
TINY_NET = {"hidden": [16]}
# one IMP level of two seeds on digits: the weight-level tickets of the E3 experiments
TINY_WEIGHT = {
    "data": {"datasets": ["digits"]},
    "net": TINY_NET,
    "fit": TINY_FIT,
    "imp": {"levels": 1, "controls": []},
    "seeds": 2,
}

TINY_SPECS: dict[str, dict] = {
    "width-sweep": {**TEACHER_STUDENT, "teachers": 2, "student": {"widths": [2, 3], "seeds": 3}},
    "subnetworks": {**TEACHER_STUDENT, "teachers": 1, "student": {"widths": [3], "seeds": 3}},
    "escape": {
        **TEACHER_STUDENT,
        "teachers": 1,
        "teacher": {"width": 3, "seed": 0},
        "student": {"widths": [2], "seeds": 4},
        "gammas": [0.5],
        "n_random": 1,
        "max_minima": 1,
    },
    "minima-census": {
        **TEACHER_STUDENT,
        "teachers": 1,
        "student": {"widths": [1, 2], "seeds": 3},
        "search_starts": 1,
        "search_steps": 20,
        "n_probes": 64,
    },
    "lottery": {
        "data": {"datasets": ["digits"]},
        "net": TINY_NET,
        "fit": TINY_FIT,
        "imp": {"levels": 2},
        "seeds": 2,
    },
    "ticket-perturbation": {
        "perturb": {"redraw": True, "scales": [4.0], "noise": []},
        "neuron": {**TEACHER_STUDENT, "student": {"widths": [3], "seeds": 3}},
        "weight": TINY_WEIGHT,
    },
    "ticket-dose": {
        "perturb": {"scales": [0.0, 4.0], "noise": [1.0]},
        "neuron": {**TEACHER_STUDENT, "teachers": 1, "student": {"widths": [3], "seeds": 3}},
        "weight": {**TINY_WEIGHT, "seeds_per_task": 0},
    },
}


def tiny_store(root: Path) -> Path:
    """Run every experiment of :data:`TINY_SPECS` into the store ``root``; returns ``root``."""
    for name, spec in TINY_SPECS.items():
        run(name, spec, store=root, progress=False)
    return root
