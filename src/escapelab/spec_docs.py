"""What an experiment's spec accepts, for people: every key with its default and allowed values
(``escapelab describe``), and the complete default spec as a TOML file (``escapelab defaults``).

Both read the spec dataclasses themselves (types, ``constraint`` metadata, the experiment's own
defaults from :func:`escapelab.config.build`), so they cannot drift from what :func:`build`
checks.
"""

from __future__ import annotations

import dataclasses
import json
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from escapelab.config import build, to_dict


def _allowed(tp: Any, meta: dict[str, Any]) -> str:
    """The values a field of type ``tp`` with metadata ``meta`` accepts, in words."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _allowed(inner[0], meta) + (" or none" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is tuple:
        item = args[0] if args else Any
        kind = "list" if len(args) == 2 and args[1] is Ellipsis else f"{len(args)} values"
        return f"{kind} of {_allowed(item, meta)}"
    bounds = [
        f"{sign} {meta[key]:g}"
        for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if meta.get(key) is not None
    ]
    name = {bool: "true/false", int: "integer", float: "number", str: "text"}.get(tp, str(tp))
    return name + (" " + ", ".join(bounds) if bounds else "")


def describe_spec(spec_type: type) -> list[dict[str, str]]:
    """One row per leaf key of ``spec_type`` (dotted path): its default (the experiment's own,
    section defaults included), the values it allows, and its help text."""
    defaults = build(spec_type, {})
    rows: list[dict[str, str]] = []

    def walk(obj: Any, cls: type, prefix: str) -> None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            value, path = getattr(obj, f.name), f"{prefix}{f.name}"
            if dataclasses.is_dataclass(hints[f.name]):
                walk(value, hints[f.name], path + ".")
                continue
            meta = dict(f.metadata)
            rows.append(
                {
                    "key": path,
                    "default": json.dumps(json.loads(json.dumps(value))),
                    "allowed": _allowed(hints[f.name], meta),
                    "help": meta.get("help", "")
                    + (
                        " (execution option: not part of the hash)" if meta.get("execution") else ""
                    ),
                }
            )

    walk(defaults, spec_type, "")
    return rows


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def defaults_toml(name: str, spec_type: type) -> str:
    """The complete default spec of experiment ``name`` as TOML that
    :func:`escapelab.config.load_config_file` reads back to the same spec. Keys whose default
    is none (TOML has no null) are written as comments."""
    lines = [f"# escapelab run {name} --config this-file.toml  (every key at its default)"]

    def emit(table: dict[str, Any], path: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if path:
            lines.extend(["", f"[{path}]"])
        for key, value in scalars.items():
            lines.append(f"# {key} = (none)" if value is None else f"{key} = {_toml_value(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                emit(value, f"{path}.{key}" if path else key)

    emit(to_dict(build(spec_type, {})), "")
    return "\n".join(lines) + "\n"


__all__ = ["defaults_toml", "describe_spec"]
