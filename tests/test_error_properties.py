"""Property test: random ``--set`` values and random config files never give a traceback. The
CLI either accepts the spec (``--dry-run`` plans it, writes nothing) with exit 0, or refuses it
in one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from escapelab.cli import main

KEYS = [
    "student.widths",
    "student.seeds",
    "student.init_scale",
    "teacher.d",
    "teacher.width",
    "teacher.activation",
    "teacher.scale",
    "train.lr",
    "train.max_norm",
    "train.betas",
    "train.steps",
    "n_samples",
    "seeds_per_task",
    "teachers",
    "bogus",
]
VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "[4,5", "4,,5", "3..9", "[]", "null"]),
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from([*KEYS, "teacher", "student", "train"]), inner, max_size=3),
    ),
    max_leaves=8,
)


def _check(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["run", "width-sweep", "--dry-run", *args])
    assert isinstance(result.exception, SystemExit) or result.exception is None, result.exc_info
    assert "Traceback" not in result.output + result.stderr
    assert result.exit_code in (0, 2), (args, result.stderr)
    if result.exit_code == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
@example([("teacher.d", "2.2807144442778714e+152")])  # overflowed the memory estimate's division
def test_random_set_values_never_trace(pairs: list[tuple[str, str]]) -> None:
    _check([arg for key, value in pairs for arg in ("--set", f"{key}={value}")])


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.one_of(JSONISH.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64)),
    st.sampled_from([".json", ".toml", ".yaml", ".txt"]),
)
def test_random_config_files_never_trace(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"spec{suffix}"
    path.write_bytes(content)
    _check(["--config", str(path)])
