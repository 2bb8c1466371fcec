"""Spec validation: types, bounds, unknown keys, cross-field checks, hashing, --set parsing."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from escapelab.config import (
    SpecError,
    build,
    load_config_file,
    parse_assignments,
    science,
    spec_hash,
)
from escapelab.experiments.kits.teacher_student import StudentSpec
from escapelab.experiments.width_sweep import WidthSweepSpec


def test_defaults_build_and_hash_is_stable() -> None:
    a, b = build(WidthSweepSpec, {}), build(WidthSweepSpec, {"teacher": {}})
    assert a == b
    assert spec_hash("width-sweep", a) == spec_hash("width-sweep", b)
    assert len(spec_hash("width-sweep", a)) == 16
    c = build(WidthSweepSpec, {"student": {"seeds": 7}})
    assert spec_hash("width-sweep", c) != spec_hash("width-sweep", a)


# Known names: a run's hash is the name of its results in every store, so these must never
# change. If one does, stored runs lose their name: add a store migration, then update the pin.
PINNED_DEFAULT_HASHES = {
    "width-sweep": "9d48a8fb2a9f19dc",
    "subnetworks": "563fd10f7a73d587",
    "escape": "f8f23903965c0ece",
    "minima-census": "3c3acb1788ada90e",
    "lottery": "4595c6d1f331e124",
    "ticket-perturbation": "135828ef34fbb312",
    "ticket-dose": "88c88d2cbf8a9df8",
    "random-features": "e2b60eb1980c60df",
    "double-descent": "9dec1c3e234e2435",
    "relu-spurious": "087437ab5f038860",
    "implicit-acceleration": "356a654aa52b7828",
    "matrix-sensing": "190b6c07703afc66",
    "catapult": "409f2c0a735ce34d",
    "scaling": "9809108249027730",
    "minima-rarity": "98ad911de86a67f3",
}


def test_pinned_hashes_of_the_default_specs() -> None:
    from escapelab.experiments import EXPERIMENTS

    assert set(PINNED_DEFAULT_HASHES) == set(EXPERIMENTS)
    for name, exp in EXPERIMENTS.items():
        spec = build(exp.spec_type, {})
        assert science(spec) == {}, name
        text = json.dumps({"experiment": name, "spec": {}}, sort_keys=True, separators=(",", ":"))
        assert spec_hash(name, spec) == hashlib.sha256(text.encode()).hexdigest()[:16]
        assert spec_hash(name, spec) == PINNED_DEFAULT_HASHES[name], name


def test_pinned_hashes_of_non_default_specs() -> None:
    spec = build(WidthSweepSpec, {"teacher": {"width": 3}})
    assert science(spec) == {"teacher": {"width": 3}}
    assert spec_hash("width-sweep", spec) == "43b4a9a2e16da069"
    widths = [build(WidthSweepSpec, {"student": {"widths": w}}) for w in ("7,6", "6,7", "6,7,7")]
    assert [s.student.widths for s in widths] == [(6, 7)] * 3
    assert {spec_hash("width-sweep", s) for s in widths} == {"c82a2c010d3410fb"}
    assert science(widths[0]) == {"student": {"widths": [6, 7]}}


def test_hash_covers_the_science_only() -> None:
    """Execution options and values equal to the defaults leave the name alone; science moves it."""
    base = spec_hash("width-sweep", build(WidthSweepSpec, {}))
    for data in (
        {"seeds_per_task": 3},
        {"teacher": {"width": 4}},  # the default, set explicitly
        {"train": {"max_norm": 1000}},  # 1e3, written another way
        {"student": {"widths": "12,10,8,7,6,5,4,4"}},
    ):
        assert spec_hash("width-sweep", build(WidthSweepSpec, data)) == base, data
    assert spec_hash("width-sweep", build(WidthSweepSpec, {"student": {"seeds": 7}})) != base
    a = build(WidthSweepSpec, {"student": {"seeds": 7}, "seeds_per_task": 2})
    b = build(WidthSweepSpec, {"student": {"seeds": 7}, "seeds_per_task": 5})
    assert spec_hash("width-sweep", a) == spec_hash("width-sweep", b)
    assert science(a) == {"student": {"seeds": 7}}
    # a spec object made by hand is canonical too
    by_hand = dataclasses.replace(
        build(WidthSweepSpec, {}), student=StudentSpec(widths=(7, 6, 7)), seeds_per_task=9
    )
    assert spec_hash("width-sweep", by_hand) == "c82a2c010d3410fb"


def test_nested_sections_compare_against_the_parents_defaults() -> None:
    from escapelab.experiments.subnetworks import SubnetworkSpec
    from escapelab.experiments.ticket_perturbation import TicketPerturbationSpec

    # the subnetworks teacher defaults to width 5: width 4 is a change there, not elsewhere
    assert build(SubnetworkSpec, {}).teacher.width == 5
    assert science(build(SubnetworkSpec, {"teacher": {"width": 4}})) == {"teacher": {"width": 4}}
    assert science(build(SubnetworkSpec, {"teacher": {"width": 5}})) == {}
    # execution options are left out at any depth
    data = {
        "neuron": {"seeds_per_task": 2, "student": {"seeds": 3}},
        "weight": {"seeds_per_task": 3},
    }
    spec = build(TicketPerturbationSpec, data)
    assert science(spec) == {"neuron": {"student": {"seeds": 3}}}


def test_strings_from_the_command_line_are_coerced() -> None:
    data = parse_assignments(
        [
            "student.widths=4..8:2",
            "train.lr=0.05",
            "teacher.bias=false",
            "n_samples=100",
            "teacher.activation=tanh",
            "train.precision=float32",
        ]
    )
    spec = build(WidthSweepSpec, data)
    assert spec.student.widths == (4, 6, 8)
    assert spec.train.lr == 0.05
    assert spec.n_samples == 100
    assert spec.teacher.activation == "tanh"
    assert build(WidthSweepSpec, {"student": {"widths": "4,5,9"}}).student.widths == (4, 5, 9)
    assert build(WidthSweepSpec, {"n_samples": "null"}).n_samples is None


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"student": {"widths": [4, 0]}}, "student.widths[1]", ">= 1"),
        ({"teacher": {"incoming": "orthonormal", "width": 5, "d": 3}}, "teacher.width", "<= d"),
        ({"train": {"tol_grad": -1e-3}}, "train.tol_grad", "> 0"),
        ({"train": {"optimizer": "sgd"}}, "train.optimizer", "adam, gd"),
        ({"student": {"seeds": "many"}}, "student.seeds", "integer"),
        ({"student": {"seeds": 2.5}}, "student.seeds", "integer"),
        ({"teacher": {"bias": "maybe"}}, "teacher.bias", "true or false"),
        ({"nonsense": 1}, "nonsense", "allowed: teacher, student"),
        ({"teacher": {"widht": 3}}, "teacher.widht", "allowed: d, width"),
        ({"teacher": {"activation": "tanh"}}, "teacher.activation", "population"),
        ({"student": {"bias": True}}, "student.bias", "bias = false"),
        ({"student": {"widths": "9..3"}}, "student.widths", "lo <= hi"),
        ({"teacher": 3}, "teacher", "table"),
    ],
)
def test_bad_values_name_the_field(data: dict, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        build(WidthSweepSpec, data)
    assert info.value.field == field
    assert words in info.value.message


def test_malformed_assignment_and_unreadable_files(tmp_path) -> None:
    with pytest.raises(SpecError, match="key=value"):
        parse_assignments(["teacher.width"])
    with pytest.raises(SpecError, match="cannot read"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_config_file(bad)
    good = tmp_path / "good.toml"
    good.write_text("[teacher]\nwidth = 3\n[student]\nwidths = [3, 6]\n")
    spec = build(WidthSweepSpec, load_config_file(good))
    assert (spec.teacher.width, spec.student.widths) == (3, (3, 6))


def test_readme_spec_file_lists_the_defaults(tmp_path) -> None:
    """The README's sweep.toml documents every field with its default: keep them in sync."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    toml = re.search(r"```toml\n(.*?)```", readme, re.S).group(1)
    path = tmp_path / "sweep.toml"
    path.write_text(toml)
    assert build(WidthSweepSpec, load_config_file(path)) == build(WidthSweepSpec, {})


def test_section_defaults_come_from_the_experiment() -> None:
    """A nested section set partly by the user keeps the experiment's own defaults elsewhere."""
    from escapelab.experiments.escape import EscapeSpec

    spec = build(EscapeSpec, {"student": {"seeds": 5}})
    assert spec.student.widths == (4,) and spec.student.seeds == 5
    assert build(EscapeSpec, {}).student.seeds == 24
