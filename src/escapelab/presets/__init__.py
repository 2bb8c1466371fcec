"""Named presets: TOML files shipped with the package, each a spec of one experiment.

A preset file holds ``experiment`` (the experiment it is a spec of), ``purpose`` (one line: what
it is for) and a ``[spec]`` table with the settings it changes from the experiment's defaults.
Its header comment gives the exact command and the expected result (measured where the README
measured it). Files are read with :func:`escapelab.config.load_config_file`, the safe TOML
reader: a preset is data, never code.

``escapelab run NAME --preset P --config FILE --set K=V`` merges the three in that order, so a
config file overrides the preset and ``--set`` overrides both (:func:`preset_spec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from escapelab.config import SpecError, load_config_file

FIELD = "--preset"


@dataclass(frozen=True)
class Preset:
    """One shipped preset: its ``name`` (the file's stem), the ``experiment`` its ``spec`` is
    for, and its one-line ``purpose``."""

    name: str
    experiment: str
    purpose: str
    spec: dict[str, Any]


def available() -> list[str]:
    """The names of the shipped presets, sorted."""
    folder = resources.files(__name__)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> Preset:
    """The shipped preset ``name``; an unknown name raises SpecError listing the available ones,
    a malformed file one naming its bad key."""
    names = available()
    if name not in names:
        raise SpecError(FIELD, f"unknown preset {name!r}; available: {', '.join(names)}")
    with resources.as_file(resources.files(__name__) / f"{name}.toml") as path:
        data = load_config_file(path)
    unknown = sorted(set(data) - {"experiment", "purpose", "spec"})
    if unknown:
        raise SpecError(f"{FIELD} {name}", f"unknown key {unknown[0]!r} in the preset file")
    experiment, purpose, spec = data.get("experiment"), data.get("purpose"), data.get("spec", {})
    if not isinstance(experiment, str) or not isinstance(purpose, str):
        raise SpecError(f"{FIELD} {name}", "the preset file needs experiment and purpose strings")
    if not isinstance(spec, dict):
        raise SpecError(f"{FIELD} {name}", "spec must be a table of settings")
    return Preset(name, experiment, purpose, spec)


def preset_spec(name: str, experiment: str) -> dict[str, Any]:
    """The spec settings of preset ``name``, checked to be a preset of ``experiment``."""
    preset = load_preset(name)
    if preset.experiment != experiment:
        raise SpecError(
            FIELD,
            f"{name} is a preset of {preset.experiment}, not of {experiment}; run it with "
            f"`escapelab run {preset.experiment} --preset {name}`",
        )
    return preset.spec
