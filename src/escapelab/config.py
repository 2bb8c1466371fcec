"""Validated experiment specifications: frozen dataclasses built from plain dicts.

A spec is a frozen dataclass whose fields carry their constraints in ``metadata`` (``ge``, ``gt``,
``le``, ``help``, and the flags ``execution`` and ``unordered``). :func:`build` turns a nested dict
(from a JSON/TOML file and ``--set key=value`` overrides) into a spec, coercing strings the way a
command line needs and raising :class:`SpecError`, which names the offending field and what is
allowed. The spec's science -- what it sets differently from the experiment's defaults
(:func:`science`) -- gives its stable hash (:func:`spec_hash`), the name of its results in the
store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class SpecError(ValueError):
    """A user mistake in a spec: ``field`` is the dotted path, ``message`` what is allowed."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def constraint(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    help: str = "",
    empty: bool = False,
    execution: bool = False,
    unordered: bool = False,
) -> dict[str, Any]:
    """Field metadata: bounds checked by :func:`build` (on each element, for tuples);
    ``empty`` lets a tuple field be empty.

    ``execution`` marks an execution option (how the work is split or run, e.g.
    ``seeds_per_task``): it cannot change any record, so :func:`spec_hash` leaves it out and runs
    that differ only there share their name and their stored results. ``unordered`` marks a tuple
    that is a set (e.g. the student widths): :func:`build` sorts it and drops repeats, so
    ``7,6``, ``6,7`` and ``6,7,7`` give the same spec and the same hash.
    """
    return {
        "ge": ge,
        "gt": gt,
        "le": le,
        "lt": lt,
        "help": help,
        "empty": empty,
        "execution": execution,
        "unordered": unordered,
    }


def _fail(path: str, expected: str, value: object) -> SpecError:
    return SpecError(path, f"expected {expected}, got {value!r}")


def _parse_int(value: object, path: str) -> int:
    if isinstance(value, bool):
        raise _fail(path, "an integer", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _fail(path, "an integer", value)


def _parse_float(value: object, path: str) -> float:
    if isinstance(value, bool):
        raise _fail(path, "a number", value)
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise _fail(path, "a number", value) from None
    else:
        raise _fail(path, "a number", value)
    if not math.isfinite(out):
        raise _fail(path, "a finite number", value)
    return out


def _parse_bool(value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise _fail(path, "true or false", value)


_BRACKETS = {"[": "]", "(": ")"}


def parse_sequence(value: object, path: str) -> list[object]:
    """Lists, tuples, "3,4,5", "[3,4,5]" and integer ranges "3..9" or "3..9:2" (inclusive).

    Strict: an unclosed bracket (``[4,5``), an empty element (``4,,5``, ``4,5,``) or a range
    with a step of zero is refused, never silently repaired.
    """
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        raise _fail(path, "a list", value)
    text = value.strip()
    if text[:1] in _BRACKETS or text[-1:] in _BRACKETS.values():
        if text[:1] not in _BRACKETS or text[-1:] != _BRACKETS[text[:1]]:
            raise _fail(path, "a list with matching brackets, like [3,4,5]", value)
        text = text[1:-1].strip()
    if ".." in text:
        lo, _, rest = text.partition("..")
        hi, _, step = rest.partition(":")
        try:
            a, b, s = int(lo), int(hi), int(step or 1)
        except ValueError:
            raise _fail(path, "a range like 3..9 or 3..9:2", value) from None
        if s <= 0 or b < a:
            raise _fail(path, "a non-empty range lo..hi with lo <= hi and step > 0", value)
        return list(range(a, b + 1, s))
    if not text:
        return []
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise _fail(path, "a comma-separated list without empty elements, like 3,4,5", value)
    return parts


def _check_bounds(value: float, meta: Mapping[str, Any], path: str) -> None:
    ge, gt, le = meta.get("ge"), meta.get("gt"), meta.get("le")
    if ge is not None and value < ge:
        raise SpecError(path, f"must be >= {ge}, got {value}")
    if gt is not None and value <= gt:
        raise SpecError(path, f"must be > {gt}, got {value}")
    if le is not None and value > le:
        raise SpecError(path, f"must be <= {le}, got {value}")
    lt = meta.get("lt")
    if lt is not None and value >= lt:
        raise SpecError(path, f"must be < {lt}, got {value}")


def _coerce(value: object, tp: Any, path: str, meta: Mapping[str, Any]) -> object:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        is_null = value is None or (
            isinstance(value, str) and value.strip().lower() in ("none", "null")
        )
        if is_null and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path, meta)
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(map(str, args))
            raise SpecError(path, f"must be one of {allowed}; got {value!r}")
        return value
    if origin is tuple:
        items = parse_sequence(value, path)
        if len(args) == 2 and args[1] is Ellipsis:
            if not items and not meta.get("empty"):
                raise SpecError(path, "must not be empty")
            out_items = tuple(
                _coerce(v, args[0], f"{path}[{i}]", meta) for i, v in enumerate(items)
            )
            return _canonical_set(out_items) if meta.get("unordered") else out_items
        if len(items) != len(args):
            raise _fail(path, f"{len(args)} values", value)
        return tuple(
            _coerce(v, a, f"{path}[{i}]", meta)
            for i, (v, a) in enumerate(zip(items, args, strict=False))
        )
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _fail(path, "a table of settings", value)
        return build(tp, value, prefix=path)
    if tp is bool:
        return _parse_bool(value, path)
    if tp is int:
        out: float = _parse_int(value, path)
    elif tp is float:
        out = _parse_float(value, path)
    elif tp is str:
        if not isinstance(value, str):
            raise _fail(path, "a string", value)
        return value
    else:  # pragma: no cover - a spec author's mistake, not a user's
        raise TypeError(f"unsupported field type {tp!r} at {path}")
    _check_bounds(out, meta, path)
    return out


def build(cls: type[T], data: Mapping[str, Any] | None = None, prefix: str = "") -> T:
    """Construct spec ``cls`` from ``data``; missing fields take their defaults.

    Raises SpecError for unknown keys (listing the allowed ones), wrong types, values out of range,
    and for the cross-field checks a spec's ``__post_init__`` makes.
    """
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise SpecError(where, f"unknown key; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        nested = dataclasses.is_dataclass(hints[name])
        if nested and f.default_factory is not dataclasses.MISSING:
            # a section's defaults are those of the field (e.g. other default widths), and
            # the user's settings override them key by key
            value = data.get(name, {})
            if isinstance(value, Mapping):
                defaults = to_dict(f.default_factory())
                kwargs[name] = build(hints[name], merge(defaults, value), prefix=path)
                continue
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], path, f.metadata)
    try:
        return cls(**kwargs)
    except SpecError as err:
        if prefix and not err.field.startswith(prefix):
            raise SpecError(f"{prefix}.{err.field}", err.message) from None
        raise


def to_dict(spec: object) -> dict[str, Any]:
    """The spec as plain JSON-ready data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))  # type: ignore[call-overload]


def _canonical_set(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """An ``unordered`` tuple in its one canonical form: sorted, without repeats."""
    return tuple(sorted(set(items)))


def _jsonable(value: object) -> Any:
    """A field value as plain JSON-ready data (nested specs as dicts, tuples as lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    return json.loads(json.dumps(value))


def _science(spec: object, default: object) -> dict[str, Any]:
    """The fields of ``spec`` that differ from ``default`` (a spec of the same type), recursing
    into nested sections, without execution options."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(spec):  # type: ignore[arg-type]
        if f.metadata.get("execution"):
            continue
        value, base = getattr(spec, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if type(base) is not type(value):
                # a section where the default has none (or another type): set in full, relative
                # to that section type's own defaults, and present even when those are all kept
                base = build(type(value), {})
                out[f.name] = _science(value, base)
                continue
            nested = _science(value, base)
            if nested:
                out[f.name] = nested
        elif value != base:
            out[f.name] = _jsonable(value)
    return out


def science(spec: object) -> dict[str, Any]:
    """What names a run: the fields of ``spec`` that differ from its type's default spec.

    Recursively, a field is kept when its value differs from the one in ``build(type(spec), {})``,
    so a nested section compares against the section default its parent gives (e.g. the teacher
    of a SubnetworkSpec against ``TeacherSpec(width=5)``, not against ``TeacherSpec()``); a
    section that keeps all its defaults is left out. Execution options (``execution=True``) are
    always left out. The spec is first rebuilt from its plain data, so a spec object made by hand
    is canonical too (``unordered`` tuples sorted and unique, integers in float fields as
    floats). The default spec gives ``{}``. The result is JSON-ready and shows a user exactly
    what tells their run apart from the defaults.
    """
    cls = type(spec)
    return _science(build(cls, to_dict(spec)), build(cls, {}))


def spec_hash(experiment: str, spec: object) -> str:
    """A stable 16-hex-digit name for (experiment, spec): the first 16 hex digits of the
    sha256 of the canonical JSON (sorted keys, no spaces) of
    ``{"experiment": experiment, "spec": science(spec)}``.

    Contract: only the science names a run. Adding a field with a default does not rename any
    run, and execution options (``seeds_per_task``, and never workers or device, which are not in
    a spec) do not either. The flip side: a field's default value is part of the name of every run
    that keeps it, so a default must never change without a store migration (runs stored under
    the old default would otherwise silently take the name of runs with the new one). The
    default spec of every experiment hashes ``{"experiment": name, "spec": {}}``.
    """
    text = json.dumps(
        {"experiment": experiment, "spec": science(spec)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_assignments(pairs: typing.Iterable[str]) -> dict[str, Any]:
    """Turn ["teacher.width=4", "student.widths=4..12"] into a nested dict.

    Values are read as JSON where they parse (numbers, true/false, null, lists) and kept as
    strings otherwise; :func:`build` then coerces them to the field's type.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(pair, "expected key=value, e.g. teacher.width=4")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, float) and not math.isfinite(value):
            value = raw  # 1e400 overflows to inf: keep what the user wrote for the message
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(key, f"{part} is set both as a value and as a table")
            node = child
        node[parts[-1]] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict; unreadable files raise SpecError('config')."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        raise SpecError("config", f"{p}: YAML is not read; write the spec as JSON or TOML")
    try:
        text = p.read_text()
    except OSError as err:
        raise SpecError("config", f"cannot read {p}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise SpecError("config", f"{p} is not a text file (JSON or TOML expected)") from None
    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        kind = "TOML" if p.suffix.lower() == ".toml" else "JSON"
        raise SpecError("config", f"{p} is not valid {kind}: {err}") from None
    if not isinstance(data, dict):
        raise SpecError("config", f"{p} must hold a table of settings at the top level")
    return data


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested dicts; ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
