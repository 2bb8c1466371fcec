"""Spec validation: types, bounds, unknown keys, cross-field checks, hashing, --set parsing."""

from __future__ import annotations

import pytest

from escapelab.config import SpecError, build, load_config_file, parse_assignments, spec_hash
from escapelab.experiments.width_sweep import WidthSweepSpec


def test_defaults_build_and_hash_is_stable() -> None:
    a, b = build(WidthSweepSpec, {}), build(WidthSweepSpec, {"teacher": {}})
    assert a == b
    assert spec_hash("width-sweep", a) == spec_hash("width-sweep", b)
    assert len(spec_hash("width-sweep", a)) == 16
    c = build(WidthSweepSpec, {"student": {"seeds": 7}})
    assert spec_hash("width-sweep", c) != spec_hash("width-sweep", a)


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
