"""The error catalogue of issue 14: every bad input and fault a new user met, replayed through the
command line. Each case asserts the exit code (2 bad input, 3 environment fault), that stderr is
exactly one line naming the thing at fault, that no traceback is printed, and that the store is
unchanged (no experiment row registered for a refused run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from escapelab.cli import main
from faults import TINY_ARGS, full_dir, read_only_dir, snapshot

RUN = ["run", "width-sweep", "--no-progress", *TINY_ARGS]


def _set(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


# (id, arguments, exit code, text the one line must contain); "{tmp}" is the test's directory
CASES: list[tuple[str, list[str], int, str]] = [
    ("widths-zero", [*RUN, *_set("student.widths=0")], 2, "student.widths[0]: must be >= 1"),
    ("widths-negative", [*RUN, *_set("student.widths=-3")], 2, "student.widths[0]"),
    ("widths-unclosed", [*RUN, *_set("student.widths=[4,5")], 2, "matching brackets"),
    ("widths-empty-element", [*RUN, *_set("student.widths=4,,5")], 2, "without empty"),
    ("widths-trailing-comma", [*RUN, *_set("student.widths=4,5,")], 2, "without empty"),
    ("widths-word", [*RUN, *_set("student.widths=abc")], 2, "student.widths[0]"),
    ("widths-reversed-range", [*RUN, *_set("student.widths=9..3")], 2, "lo <= hi"),
    ("widths-zero-step", [*RUN, *_set("student.widths=3..9:0")], 2, "step > 0"),
    ("widths-empty", [*RUN, *_set("student.widths=[]")], 2, "must not be empty"),
    ("widths-mixed-brackets", [*RUN, *_set("student.widths=(4,5]")], 2, "matching brackets"),
    ("widths-huge", [*RUN, *_set("student.widths=100000")], 2, "student.widths: one task"),
    ("seeds-zero", [*RUN, *_set("student.seeds=0")], 2, "student.seeds: must be >= 1"),
    ("seeds-fraction", [*RUN, *_set("student.seeds=1.5")], 2, "student.seeds: expected an int"),
    ("seeds-bool", [*RUN, *_set("student.seeds=true")], 2, "student.seeds"),
    ("seeds-huge", [*RUN, *_set("student.seeds=10000000")], 2, "student.seeds: one task"),
    (
        "seeds-huge-per-task",
        [*RUN, *_set("student.seeds=10000000", "seeds_per_task=1")],
        2,
        "seeds_per_task: 20,000,000 tasks",
    ),
    # refused before a group per teacher is built (the property test once met 10^9 teachers)
    ("teachers-huge", [*RUN, *_set("teachers=1000000000")], 2, "2,000,000,000 tasks planned"),
    (
        "scaling-teachers-huge",
        ["run", "scaling", "--no-progress", *_set("family.teachers=1000000000")],
        2,
        "12,000,000,000 tasks planned",
    ),
    ("d-huge", [*RUN, *_set("teacher.d=100000")], 2, "teacher.d: one task needs"),
    ("d-zero", [*RUN, *_set("teacher.d=0")], 2, "teacher.d: must be >= 1"),
    ("teacher-width-zero", [*RUN, *_set("teacher.width=0")], 2, "teacher.width"),
    ("activation-unknown", [*RUN, *_set("teacher.activation=gelu")], 2, "must be one of erf"),
    (
        "orthonormal-too-wide",
        [*RUN, *_set("teacher.incoming=orthonormal", "teacher.width=5")],
        2,
        "teacher.width: orthonormal",
    ),
    ("scale-zero", [*RUN, *_set("teacher.scale=0")], 2, "teacher.scale: must be > 0"),
    ("scale-nan", [*RUN, *_set("teacher.scale=nan")], 2, "teacher.scale: expected a finite"),
    ("scale-inf", [*RUN, *_set("teacher.scale=inf")], 2, "teacher.scale: expected a finite"),
    ("bias-word", [*RUN, *_set("teacher.bias=maybe")], 2, "teacher.bias: expected true or"),
    ("lr-inf", [*RUN, *_set("train.lr=inf")], 2, "train.lr: expected a finite number"),
    ("lr-overflow", [*RUN, *_set("train.lr=1e400")], 2, "got '1e400'"),
    ("lr-minus-inf", [*RUN, *_set("train.lr=-inf")], 2, "train.lr: expected a finite"),
    ("lr-json-infinity", [*RUN, *_set("train.lr=Infinity")], 2, "train.lr: expected a finite"),
    ("lr-nan", [*RUN, *_set("train.lr=nan")], 2, "train.lr: expected a finite"),
    ("lr-zero", [*RUN, *_set("train.lr=0")], 2, "train.lr: must be > 0"),
    ("lr-word", [*RUN, *_set("train.lr=fast")], 2, "train.lr: expected a"),
    ("max-norm-inf", [*RUN, *_set("train.max_norm=inf")], 2, "train.max_norm: expected a finite"),
    ("steps-negative", [*RUN, *_set("train.steps=-1")], 2, "train.steps"),
    ("tol-negative", [*RUN, *_set("train.tol_global=-1")], 2, "train.tol_global"),
    ("optimizer-unknown", [*RUN, *_set("train.optimizer=sgd")], 2, "train.optimizer: must be"),
    ("precision-unknown", [*RUN, *_set("train.precision=float16")], 2, "train.precision"),
    ("betas-one", [*RUN, *_set("train.betas=[0.9]")], 2, "train.betas: expected 2 values"),
    ("betas-inf", [*RUN, *_set("train.betas=[0.9,1e999]")], 2, "train.betas"),
    ("n-samples-zero", [*RUN, *_set("n_samples=0")], 2, "n_samples: must be >= 1"),
    ("n-samples-overflow", [*RUN, *_set("n_samples=1e400")], 2, "n_samples"),
    ("teachers-zero", [*RUN, *_set("teachers=0")], 2, "teachers: must be >= 1"),
    ("per-task-negative", [*RUN, *_set("seeds_per_task=-1")], 2, "seeds_per_task"),
    ("unknown-key", [*RUN, *_set("bogus=1")], 2, "bogus: unknown key; allowed:"),
    ("unknown-nested-key", [*RUN, *_set("teacher.bogus=1")], 2, "teacher.bogus: unknown key"),
    ("value-for-table", [*RUN, *_set("teacher=3")], 2, "teacher: expected a table"),
    ("table-for-value", [*RUN, *_set("teacher.width.x=1")], 2, "teacher.width"),
    ("no-key", [*RUN, *_set("=4")], 2, "expected key=value"),
    ("no-equals", [*RUN, *_set("teacher.width")], 2, "expected key=value"),
    ("activation-no-closed-form", [*RUN, *_set("teacher.activation=tanh")], 2, "n_samples"),
    ("workers-zero", [*RUN, "--workers", "0"], 2, "--workers"),
    ("workers-word", [*RUN, "--workers", "x"], 2, "--workers"),
    ("device-tpu", [*RUN, "--device", "tpu"], 2, "--device: must be one of auto, cpu"),
    ("device-cuda-7", [*RUN, "--device", "cuda:7"], 2, "--device: must be one of"),
    ("max-memory-word", [*RUN, "--max-memory", "lots"], 2, "--max-memory: expected a size"),
    ("max-memory-zero", [*RUN, "--max-memory", "0"], 2, "--max-memory: must be a positive"),
    ("max-memory-tiny", [*RUN, "--max-memory", "1k"], 2, "more than the --max-memory limit"),
    ("experiment-unknown", ["run", "no-such-experiment"], 2, "no-such-experiment"),
    ("option-unknown", [*RUN, "--fast"], 2, "--fast"),
    ("config-missing", [*RUN, "--config", "{tmp}/missing.toml"], 2, "config: cannot read"),
    ("config-bad-toml", [*RUN, "--config", "{tmp}/bad.toml"], 2, "not valid TOML"),
    ("config-bad-json", [*RUN, "--config", "{tmp}/bad.json"], 2, "not valid JSON"),
    ("config-yaml", [*RUN, "--config", "{tmp}/spec.yaml"], 2, "YAML is not read"),
    ("config-list", [*RUN, "--config", "{tmp}/list.json"], 2, "a table of settings"),
    ("config-binary", [*RUN, "--config", "{tmp}/binary.json"], 2, "not a text file"),
    ("config-directory", [*RUN, "--config", "{tmp}"], 2, "config"),
    ("config-unknown-key", [*RUN, "--config", "{tmp}/unknown.json"], 2, "colour: unknown key"),
    ("config-infinity", [*RUN, "--config", "{tmp}/inf.json"], 2, "train.lr: expected a finite"),
    (
        "lottery-huge-net",
        ["run", "lottery", *_set("net.hidden=[100000,100000]")],
        2,
        "net.hidden: one task",
    ),
    ("lottery-dataset", ["run", "lottery", *_set("data.datasets=imagenet")], 2, "data.datasets"),
    ("subsets-zero", ["run", "subnetworks", *_set("max_subsets=0")], 2, "max_subsets"),
    ("kinds-empty", ["run", "ticket-perturbation", *_set("kinds=[]")], 2, "kinds"),
    ("counts-word", ["counts", "--r-star", "abc"], 2, "--r-star: teacher widths must be"),
    ("counts-r-one", ["counts", "--r-star", "1"], 2, "--r-star"),
    ("counts-r-huge", ["counts", "--r-star", "2..100"], 2, "--r-star"),
    ("counts-r-empty-element", ["counts", "--r-star", "2,,3"], 2, "--r-star"),
    ("counts-width-huge", ["counts", "--max-width", "100000"], 2, "--max-width"),
    ("counts-width-one", ["counts", "--max-width", "1"], 2, "--max-width"),
    ("counts-verify-act", ["counts", "--verify-activation", "tanh"], 2, "--verify-activation"),
    ("counts-verify-teachers", ["counts", "--verify-teachers", "0"], 2, "--verify-teachers"),
    ("counts-old-flag", ["counts", "--duplication-only"], 2, "--duplication-only"),
    ("show-unknown", ["show", "zzzz"], 2, "no experiment in"),
    ("export-unknown", ["export", "zzzz"], 2, "no experiment in"),
    ("export-suffix", ["export", "{hash}", "--out", "{tmp}/x.txt"], 2, "--out: must end in"),
    ("list-no-store", ["list", "--store", "{tmp}/nowhere"], 2, "no store at"),
    ("check-no-store", ["store", "check", "{tmp}/nowhere"], 2, "no store at"),
    ("recover-into-itself", ["store", "recover", "{store}", "--into", "{store}"], 2, "--into"),
    ("export-to-proc", ["export", "{hash}", "--out", "/proc/escapelab.csv"], 3, "/proc"),
]


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding one tiny finished run, and the run's hash."""
    store = tmp_path_factory.mktemp("catalogue") / "store"
    result = CliRunner().invoke(main, [*RUN, "--store", str(store), "--out", str(store / "r")])
    assert result.exit_code == 0, result.output
    from escapelab import Store

    return store, Store(store).experiments()[0].hash


def _config_files(tmp: Path) -> None:
    (tmp / "bad.toml").write_text("teacher = [\n")
    (tmp / "bad.json").write_text("{teacher: 3")
    (tmp / "spec.yaml").write_text("teacher:\n  width: 3\n")
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "binary.json").write_bytes(bytes(range(256)))
    (tmp / "unknown.json").write_text(json.dumps({"colour": "red"}))
    (tmp / "inf.json").write_text('{"train": {"lr": Infinity}}')


def invoke(args: list[str], store: Path) -> tuple[int, list[str]]:
    """Run the CLI in-process (stderr apart); the exit code and the lines of stderr."""
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stderr.splitlines()


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_catalogue(case: tuple, stored: tuple[Path, str], tmp_path: Path) -> None:
    _, args, code, text = case
    if case[0] == "device-cuda-7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    original, spec_hash = stored
    store = tmp_path / "store"
    shutil.copytree(original, store)
    _config_files(tmp_path)
    args = [a.format(tmp=tmp_path, hash=spec_hash, store=store) for a in args]
    if args[0] in ("run", "show", "export", "list") and "--store" not in args:
        args = [*args, "--store", str(store)]
    before = snapshot(store)
    exit_code, lines = invoke(args, store)
    assert exit_code == code, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert text in lines[0], lines[0]
    assert snapshot(store) == before


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--debug", *RUN, *_set("train.lr=inf")])
    assert result.exit_code == 2 and "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: train.lr")


def test_no_row_for_a_refused_run(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for pairs in (("student.seeds=10000000",), ("student.widths=100000",)):
        code, _ = invoke([*RUN, *_set(*pairs), "--store", str(store)], store)
        assert code == 2
    assert not store.exists()


# ---- the file system: read-only places, a full disk -------------------------------------


def _fill_with(stored: Path):
    def populate(path: Path) -> None:
        shutil.copytree(stored, path, dirs_exist_ok=True)

    return populate


def test_read_only_store_directory(stored: tuple[Path, str], tmp_path: Path) -> None:
    original, spec_hash = stored
    with read_only_dir(tmp_path / "ro", _fill_with(original)) as store:
        before = snapshot(store)
        # a new spec must be written: refused in one line
        code, lines = invoke([*RUN, *_set("student.seeds=3"), "--store", str(store)], store)
        assert code == 3 and len(lines) == 1 and str(store) in lines[0], lines
        assert "choose another --store" in lines[0]
        # everything already stored: reading works, the report goes where asked
        out = tmp_path / "report"
        code, lines = invoke([*RUN, "--store", str(store), "--out", str(out)], store)
        assert code == 0, lines
        assert (out / "report.html").stat().st_size > 0
        # ... and the default report place (inside the store) is refused in one line
        code, lines = invoke([*RUN, "--store", str(store)], store)
        assert code == 3 and len(lines) == 1 and "read-only" in lines[0] + "permission", lines
        for args in (["list"], ["show", spec_hash]):
            code, lines = invoke([*args, "--store", str(store)], store)
            assert code == 0, (args, lines)
        assert snapshot(store) == before


def test_store_and_export_under_a_read_only_directory(
    stored: tuple[Path, str], tmp_path: Path
) -> None:
    original, spec_hash = stored
    with read_only_dir(tmp_path / "ro") as parent:
        code, lines = invoke([*RUN, "--store", str(parent / "store")], parent)
        assert code == 3 and len(lines) == 1 and "choose another --store" in lines[0], lines
        out = parent / "records.csv"
        code, lines = invoke(
            ["export", spec_hash, "--store", str(original), "--out", str(out)], parent
        )
        assert code == 3 and len(lines) == 1 and str(parent) in lines[0], lines
        assert list(parent.iterdir()) == []


def test_disk_full_while_storing(tmp_path: Path) -> None:
    with full_dir(tmp_path / "full", size_kb=64, leave_bytes=0) as disk:
        store = disk / "store"
        code, lines = invoke([*RUN, "--store", str(store)], disk)
        assert code == 3 and len(lines) == 1, lines
        assert "no space left" in lines[0] or "disk full" in lines[0]


def test_disk_full_while_writing_the_report(stored: tuple[Path, str], tmp_path: Path) -> None:
    original, _ = stored
    store = tmp_path / "store"
    shutil.copytree(original, store)
    with full_dir(tmp_path / "full", size_kb=64, leave_bytes=8192) as disk:
        out = disk / "report"
        code, lines = invoke([*RUN, "--store", str(store), "--out", str(out)], disk)
        assert code == 3 and len(lines) == 1 and "no space left" in lines[0], lines
        # nothing half-written that looks complete: the report's files are all absent
        assert not out.exists() or not any(p.suffix for p in out.iterdir())


def test_disk_full_in_sqlite_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """SQLite's own "database or disk is full" during a commit (made real with a page limit on
    every connection): one line, exit 3, and the tasks stored before are kept."""
    from escapelab.runner import sweep
    from escapelab.runner.store import Store

    opened = Store._open

    def capped(self: Store, write: bool):
        conn = opened(self, write)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    def big_task(name: str, spec: dict, task, device: str) -> tuple:
        return task.key, [{"blob": "x" * 100_000}], 0.0

    monkeypatch.setattr(Store, "_open", capped)
    monkeypatch.setattr(sweep, "_run_one", big_task)
    store = tmp_path / "s"
    code, lines = invoke([*RUN, "--store", str(store)], tmp_path)
    assert code == 3 and len(lines) == 1 and "disk full" in lines[0], lines
    assert "rerun the same command to resume" in lines[0]
    monkeypatch.undo()
    assert Store(store).experiments()[0].tasks_done == 0


def test_missing_pyarrow_is_an_environment_fault(stored: tuple[Path, str], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    try:
        import pyarrow  # noqa: F401

        pytest.skip("pyarrow is installed")
    except ImportError:
        pass
    original, spec_hash = stored
    out = tmp_path / "r.parquet"
    code, lines = invoke(
        ["export", spec_hash, "--store", str(original), "--out", str(out)], tmp_path
    )
    assert code == 3 and len(lines) == 1 and "pip install 'escapelab[parquet]'" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("n", "size", "count"),
    [
        (1536, "1.5 KiB", "1,536"),
        (3 * 1024**5, "3 PiB", "3.37e+15"),
        (10**400, "8.88e+384 PiB", "1.00e+400"),  # 10^400 / 1024^5 = 8.88e384
    ],
)
def test_sizes_and_counts_print_without_overflow(n: int, size: str, count: str) -> None:
    """Absurd sizes (a mistyped 1e400) print in scientific notation, never overflow a float."""
    from escapelab.runner.budget import format_count, format_size

    assert format_size(n) == size
    assert format_count(n) == count
