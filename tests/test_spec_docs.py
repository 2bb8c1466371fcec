"""``escapelab describe`` and ``escapelab defaults``: every key, and a TOML that builds back to
the experiment's default spec."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from escapelab.cli import main
from escapelab.config import build, load_config_file, to_dict
from escapelab.experiments import EXPERIMENTS
from escapelab.spec_docs import describe_spec


def _leaves(data: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_defaults_toml_builds_back_to_the_default_spec(name: str, tmp_path) -> None:
    result = CliRunner().invoke(main, ["defaults", name])
    assert result.exit_code == 0, result.output
    path = tmp_path / "spec.toml"
    path.write_text(result.output)
    spec_type = EXPERIMENTS[name].spec_type
    assert build(spec_type, load_config_file(path)) == build(spec_type, {})


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_describe_lists_every_key_with_its_default(name: str) -> None:
    spec_type = EXPERIMENTS[name].spec_type
    rows = describe_spec(spec_type)
    assert [r["key"] for r in rows] == _leaves(to_dict(build(spec_type, {})))
    output = CliRunner().invoke(main, ["describe", name]).output
    assert all(f"| {r['key']} |" in output for r in rows)


def test_describe_gives_bounds_choices_and_the_experiments_own_defaults() -> None:
    rows = {r["key"]: r for r in describe_spec(EXPERIMENTS["subnetworks"].spec_type)}
    assert rows["teacher.width"]["default"] == "5"  # the section default subnetworks gives
    assert rows["teacher.width"]["allowed"] == "integer >= 1"
    assert rows["teacher.activation"]["allowed"].startswith("one of erf, tanh")
    assert rows["n_samples"]["allowed"] == "integer >= 1 or none"
    assert "not part of the hash" in rows["seeds_per_task"]["help"]


def test_an_unknown_experiment_is_a_one_line_error() -> None:
    result = CliRunner().invoke(main, ["describe", "nope"])
    assert result.exit_code == 2 and "nope" in result.output
