"""Sizes checked before they hurt: the memory one task of a spec needs, against what is free.

The estimate is read from the spec alone, before a tensor is allocated or a row is stored. It is
an upper-bound sketch of the largest buffers a task holds at once, not a measurement:

* teacher-student sections (:class:`~escapelab.experiments.kits.teacher_student.
  TeacherStudentSpec`, wherever they sit in a spec): B members per task (``seeds_per_task``, or
  all ``student.seeds``), each with P = m (d + 1) parameters (plus m + 1 with biases) at the
  widest student m: the batched exact Hessian and its eigendecomposition (3 B P^2 numbers), the
  trainer's copies of the parameters (8 B P), and with ``n_samples`` the activations and their
  gradients (4 B n m) and the data (n d). Experiments that train sub-networks too
  (``max_subsets``) add that many width-r* members per member.
* classifier sections (IMP on MNIST-1D / digits): B networks with P weights each, in float32,
  kept about 8 times (weights, gradients, two Adam moments, masks, initial and rewind copies,
  the best state), plus the activations of one batch.

:func:`check_memory` refuses a spec whose estimate exceeds the limit (``--max-memory``, default:
the memory the system reports available), naming the field that drives the estimate, the
estimate and the limit, and what to lower.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import dataclass
from typing import Any

from escapelab.config import SpecError

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_ITEMSIZE = {"float64": 8, "float32": 4}
# inputs and outputs of the datasets a classifier section may name
_DATASET_SHAPE = {"mnist1d": (40, 10), "digits": (64, 10)}


@dataclass(frozen=True)
class MemoryNeed:
    """The estimated peak memory of one task (bytes), the spec field that drives it most, how
    the number was reached (for the message), the members in a task and the field that counts
    them (when a task of one member would fit, that field is the one to blame)."""

    bytes: int
    field: str
    how: str
    members: int
    members_field: str


def parse_size(text: str, option: str = "--max-memory") -> int:
    """Bytes from ``"512M"``, ``"4G"``, ``"1.5T"`` or a plain byte count (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise SpecError(option, f"expected a size like 512M, 4G or 1.5T, got {text!r}")
    value = float(match[1]) * _UNITS[match[2]]
    if value < 1:
        raise SpecError(option, f"must be a positive size, got {text!r}")
    return int(value)


def format_size(n: float) -> str:
    """``n`` bytes in binary units with three significant digits, e.g. ``1.25 GiB``."""
    if n >= 1024**6:  # only mistyped sizes land here; ints stay exact (float() would overflow)
        return f"{format_count(int(n) // 1024**5)} PiB"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_count(n: int) -> str:
    """``n`` with thousands separators, or in scientific notation beyond 10^12 (absurd sizes a
    user typed by mistake should not fill the terminal)."""
    if n < 10**12:
        return f"{n:,}"
    digits = str(n)  # integer digits, not float(n): that overflows beyond 1.8e308
    return f"{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"


def available_memory() -> int:
    """The memory the system can give without swapping: ``MemAvailable`` of /proc/meminfo on
    Linux, otherwise free pages times page size (POSIX), otherwise total memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2**40


def _teacher_student_need(spec: Any, prefix: str) -> MemoryNeed:
    """:class:`MemoryNeed` of one teacher-student section (see the module docstring)."""
    t, s = spec.teacher, spec.student
    members = min(spec.seeds_per_task or s.seeds, s.seeds)
    item = _ITEMSIZE.get(getattr(spec.train, "precision", "float64"), 8)
    widths = [*s.widths, t.width + 1]  # escape and census embed minima one unit wider
    m = max(widths)
    params = m * (t.d + 1) + (m + 1 if s.bias else 0)
    extra = getattr(spec, "max_subsets", 0)  # sub-networks trained alongside each member
    sub_params = t.width * (t.d + 1)
    n = spec.n_samples or 0
    terms = {
        f"{prefix}student.widths": members * 3 * params**2 * item,
        f"{prefix}student.seeds": members * 8 * params * item
        + members * extra * (3 * sub_params**2 + 8 * sub_params) * item,
        f"{prefix}n_samples": (4 * members * n * m + n * t.d) * item,
    }
    driver = max(terms, key=terms.__getitem__)
    if driver.endswith("student.widths") and t.d > m:
        driver = f"{prefix}teacher.d"  # the input dimension, not the width, makes P large
    how = (
        f"{format_count(members)} members x {format_count(params)} parameters "
        f"(width {format_count(m)}, d = {format_count(t.d)})"
        + (f" x {format_count(n)} samples" if n else "")
        + f", {'float64' if item == 8 else 'float32'}"
    )
    return MemoryNeed(int(sum(terms.values())), driver, how, members, f"{prefix}student.seeds")


def _classifier_need(spec: Any, prefix: str) -> MemoryNeed:
    """:class:`MemoryNeed` of one classifier section (IMP networks on a dataset)."""
    members = min(spec.seeds_per_task or spec.seeds, spec.seeds)
    sizes = [_DATASET_SHAPE.get(name, (spec.data.teacher.d, 1)) for name in spec.data.datasets]
    n_in, n_out = max(sizes)
    net = spec.net
    if net.model == "cnn1d":
        widths = [n_in, net.channels * n_in, n_out]
        params = 3 * 5 * net.channels**2 + net.channels * n_in * n_out
    else:
        widths = [n_in, *net.hidden, n_out]
        params = sum(a * b + b for a, b in itertools.pairwise(widths))
    batch = spec.fit.batch_size
    total = members * (8 * params + 3 * batch * sum(widths)) * 4
    field = f"{prefix}net.hidden" if net.model == "mlp" else f"{prefix}net.channels"
    how = f"{format_count(members)} networks x {format_count(params)} weights, float32"
    return MemoryNeed(int(total), field, how, members, f"{prefix}seeds")


def _sections(spec: Any, prefix: str = "") -> list[tuple[Any, str]]:
    """``spec`` and its nested spec sections, each with its dotted prefix."""
    out = [(spec, prefix)]
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out += _sections(value, f"{prefix}{f.name}.")
    return out


def memory_need(spec: Any) -> MemoryNeed | None:
    """The largest :class:`MemoryNeed` of any section of ``spec``; None when no section is of a
    kind the estimate knows (then nothing is checked)."""
    from escapelab.experiments.kits.teacher_student import TeacherStudentSpec

    needs = []
    for section, prefix in _sections(spec):
        if isinstance(section, TeacherStudentSpec):
            needs.append(_teacher_student_need(section, prefix))
        elif all(hasattr(section, k) for k in ("net", "data", "fit", "seeds", "seeds_per_task")):
            needs.append(_classifier_need(section, prefix))
    return max(needs, key=lambda need: need.bytes, default=None)


def check_memory(spec: Any, workers: int = 1, limit: int | None = None) -> MemoryNeed | None:
    """Refuse (SpecError naming the driving field) a spec whose ``workers`` tasks at once would
    need more than ``limit`` bytes (default: :func:`available_memory`); returns the estimate."""
    need = memory_need(spec)
    if need is None:
        return None
    budget = available_memory() if limit is None else limit
    total = need.bytes * workers
    if total > budget:
        source = "the --max-memory limit" if limit is not None else "the memory available"
        at_once = f" x {workers} workers" if workers > 1 else ""
        one_member_fits = need.members > 1 and need.bytes * workers <= budget * need.members
        field = need.members_field if one_member_fits else need.field
        raise SpecError(
            field,
            f"one task needs about {format_size(need.bytes)}{at_once} ({need.how}), more than "
            f"{source} ({format_size(budget)}); lower {field}, or set seeds_per_task to "
            "run fewer members per task" + (", or use fewer --workers" if workers > 1 else ""),
        )
    return need
