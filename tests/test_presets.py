"""Shipped presets: each builds to a valid spec of its experiment, documents itself in its header,
and combines with --config and --set in the order preset < config file < --set."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import escapelab.cli as cli
from escapelab.config import SpecError, build, spec_hash
from escapelab.experiments import EXPERIMENTS, get_experiment
from escapelab.presets import available, load_preset, preset_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(cli.__file__).parent / "presets"
ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_presets_are_shipped() -> None:
    assert {"demo", "relu-spurious-table", "width-sweep-paper"} <= set(available())


@pytest.mark.parametrize("name", available())
def test_preset_builds_to_a_spec_of_its_experiment(name: str) -> None:
    preset = load_preset(name)
    assert preset.experiment in EXPERIMENTS
    spec = build(get_experiment(preset.experiment).spec_type, preset.spec)
    assert isinstance(spec, get_experiment(preset.experiment).spec_type)
    assert preset.purpose and "\n" not in preset.purpose


@pytest.mark.parametrize("name", available())
def test_preset_header_gives_command_purpose_and_expected_result(name: str) -> None:
    text = (PRESET_DIR / f"{name}.toml").read_text()
    header = text[: text.index("\nexperiment =")]
    assert all(line.startswith("#") for line in header.splitlines())
    experiment = load_preset(name).experiment
    assert f"experiment: {experiment}" in header
    command = re.search(r"Command:\s+(escapelab [^\n]+)", header)
    assert command is not None
    expected = "escapelab demo" if name == "demo" else f"escapelab run {experiment} --preset {name}"
    assert command.group(1).startswith(expected)
    assert "For:" in header and "Expected" in header


def test_preset_values_are_those_of_the_file() -> None:
    spec = build(get_experiment("relu-spurious").spec_type, load_preset("relu-spurious-table").spec)
    assert (spec.inits, spec.inits_per_task) == (500, 250)  # the README's measured table
    paper = build(get_experiment("width-sweep").spec_type, load_preset("width-sweep-paper").spec)
    assert (paper.teachers, paper.student.seeds) == (8, 200)
    assert paper.student.widths == (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16)


def test_pyproject_ships_the_presets_as_package_data() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["tool"]["setuptools"]["package-data"]["escapelab.presets"] == ["*.toml"]


def _captured_run(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> tuple[dict[str, Any], str]:
    """The spec data `escapelab run` validates for ``args`` (a dry run), and its output."""
    seen: dict[str, Any] = {}
    real_plan = cli.plan

    def spy(name: str, data: dict[str, Any], *rest: Any) -> Any:
        seen.update(data)
        return real_plan(name, data, *rest)

    monkeypatch.setattr(cli, "plan", spy)
    result = CliRunner().invoke(cli.main, ["run", *args, "--dry-run", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return seen, result.output


def test_precedence_preset_then_config_then_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[teacher]\nwidth = 3\n[student]\nseeds = 10\n")
    base = ["width-sweep", "--preset", "width-sweep-paper"]
    cls = get_experiment("width-sweep").spec_type

    alone = build(cls, _captured_run(monkeypatch, base)[0])
    assert (alone.student.seeds, alone.teacher.width, alone.teachers) == (200, 4, 8)

    with_config = build(cls, _captured_run(monkeypatch, [*base, "--config", str(config)])[0])
    assert (with_config.student.seeds, with_config.teacher.width) == (10, 3)  # config > preset
    assert with_config.student.widths == alone.student.widths  # untouched keys kept

    data, output = _captured_run(
        monkeypatch, [*base, "--config", str(config), "--set", "student.seeds=5"]
    )
    both = build(cls, data)
    assert (both.student.seeds, both.teacher.width, both.teachers) == (5, 3, 8)  # set > config
    assert spec_hash("width-sweep", both) in output


def test_demo_runs_the_demo_preset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        cli, "_run_and_report", lambda name, spec, *rest: calls.append((name, spec))
    )
    result = CliRunner().invoke(cli.main, ["demo", "--store", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == [("width-sweep", preset_spec("demo", "width-sweep"))]
    # the demo keeps the name of the default width sweep, so runs stored by earlier demos resume
    cls = get_experiment("width-sweep").spec_type
    assert spec_hash("width-sweep", build(cls, calls[0][1])) == spec_hash(
        "width-sweep", build(cls, {})
    )


def _error(args: list[str]) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli.main, args)
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stderr.splitlines()


def test_unknown_preset_is_one_line_listing_the_available(tmp_path: Path) -> None:
    store = tmp_path / "s"
    code, lines = _error(["run", "width-sweep", "--preset", "nope", "--store", str(store)])
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: --preset: unknown preset 'nope'; available: ")
    assert all(name in lines[0] for name in available())
    assert not store.exists()  # refused before the store is touched


def test_preset_of_another_experiment_is_one_line(tmp_path: Path) -> None:
    args = ["run", "width-sweep", "--preset", "relu-spurious-table", "--store", str(tmp_path)]
    code, lines = _error(args)
    assert code == 2 and len(lines) == 1
    assert "relu-spurious-table is a preset of relu-spurious, not of width-sweep" in lines[0]
    with pytest.raises(SpecError) as err:
        preset_spec("relu-spurious-table", "width-sweep")
    assert err.value.field == "--preset"


def test_presets_command_lists_every_preset_with_its_purpose() -> None:
    result = CliRunner().invoke(cli.main, ["presets"])
    assert result.exit_code == 0
    rows = [line for line in result.output.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == available()
    for row, name in zip(rows, available(), strict=True):
        preset = load_preset(name)
        assert f"| {preset.experiment} | {preset.purpose} |" in row
