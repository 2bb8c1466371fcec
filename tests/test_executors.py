"""Executors without a cluster: a task that raises is logged and retried, the Dask options are
validated before anything runs, a missing Dask is one line, GPUs are shared out per worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import escapelab
from escapelab.cli import main
from escapelab.config import SpecError
from escapelab.errors import EXIT_ENVIRONMENT, EXIT_TASKS_FAILED, EXIT_USAGE, EnvironmentFault
from escapelab.runner import sweep
from escapelab.runner.executors import THREAD_ENV, DaskCluster, SlurmConfig, worker_device
from escapelab.runner.store import Store

pytestmark = pytest.mark.usefixtures("single_thread")

# 4 tasks of one seed, a second or so each
SPEC = {
    "teachers": 1,
    "teacher": {"width": 2},
    "student": {"widths": [2, 3], "seeds": 2},
    "train": {"steps": 150, "refine_steps": 5, "certify_rounds": 0},
    "seeds_per_task": 1,
}
BAD_KEY = "m=0003/seeds=00001-00001"


def _science(records: list[dict]) -> list[tuple]:
    """Records without their timings, sorted, for comparison across runs."""
    return sorted(
        tuple(sorted((k, v) for k, v in r.items() if k != "wall_time" and "seconds" not in k))
        for r in records
    )


def _failing_run_one(bad_key: str):
    real = sweep._run_one

    def run_one(name, spec, task, device):
        if task.key == bad_key:
            raise RuntimeError("boom in a task")
        return real(name, spec, task, device)

    return run_one


@pytest.fixture(scope="module")
def reference(single_thread: None, tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    """The records of SPEC run by the local executor, in the driver."""
    out = escapelab.run("width-sweep", SPEC, store=tmp_path_factory.mktemp("ref"), progress=False)
    assert out.tasks_run == 4 and len(out.records) == 4
    return _science(out.records)


def test_a_failing_task_is_logged_and_only_it_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: list[tuple]
) -> None:
    monkeypatch.setattr(sweep, "_run_one", _failing_run_one(BAD_KEY))
    first = escapelab.run("width-sweep", SPEC, store=tmp_path, progress=False)
    assert first.tasks_run == 3 and len(first.records) == 3
    assert [(f.key, f.error) for f in first.failures] == [(BAD_KEY, "RuntimeError: boom in a task")]
    assert {r["task"] for r in first.records} == {
        "m=0002/seeds=00000-00000",
        "m=0002/seeds=00001-00001",
        "m=0003/seeds=00000-00000",
    }
    monkeypatch.undo()
    again = escapelab.run("width-sweep", SPEC, store=tmp_path, progress=False)
    assert (again.tasks_run, again.tasks_skipped, again.failures) == (1, 3, ())
    assert _science(again.records) == reference
    times = Store(tmp_path).worker_times(again.spec_hash)
    assert sum(n for n, _ in times.values()) == 4  # one successful attempt per task
    assert all(t > 0 for _, t in times.values())


def test_the_cli_exits_4_naming_the_failed_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep, "_run_one", _failing_run_one(BAD_KEY))
    args = ["run", "width-sweep", "--store", str(tmp_path), "--no-progress", "--out"]
    args += [str(tmp_path / "out")]
    for key, value in (
        ("teacher.width", 2),
        ("student.widths", "2,3"),
        ("student.seeds", 2),
        ("train.steps", 150),
        ("train.refine_steps", 5),
        ("train.certify_rounds", 0),
        ("seeds_per_task", 1),
        ("teachers", 1),
    ):
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_TASKS_FAILED, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: 1 task(s) failed") and BAD_KEY in line and "boom" in line
    assert (tmp_path / "out" / "report.html").exists()  # the rest is reported
    h = Store(tmp_path).experiments()[0].hash
    shown = CliRunner().invoke(main, ["show", h[:8], "--store", str(tmp_path)])
    assert f"{BAD_KEY} on " in shown.output and "RuntimeError: boom in a task" in shown.output


def test_a_fault_of_the_environment_in_a_task_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(name, spec, task, device):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sweep, "_run_one", full_disk)
    with pytest.raises(OSError):
        escapelab.run("width-sweep", SPEC, store=tmp_path, progress=False)
    assert Store(tmp_path).failures(Store(tmp_path).experiments()[0].hash) == []


def test_missing_dask_is_one_line_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(EnvironmentFault, match=r"escapelab\[dask\]"):
        escapelab.run("width-sweep", SPEC, store=tmp_path, executor="dask", progress=False)
    result = CliRunner().invoke(
        main, ["run", "width-sweep", "--executor", "dask", "--store", str(tmp_path / "s")]
    )
    assert result.exit_code == EXIT_ENVIRONMENT
    assert result.output.strip() == (
        "error: dask[distributed]: not installed, and --executor dask needs it; pip install "
        "'escapelab[dask]' (or pip install dask[distributed])"
    )
    assert not (tmp_path / "s").exists()


def test_missing_dask_jobqueue_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(EnvironmentFault, match="dask-jobqueue: not installed"):
        DaskCluster(slurm={"cores": 2}).check_installed()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheduler", "tcp://h:1"], "error: --scheduler: needs --executor dask"),
        (["--dask-workers", "2"], "error: --dask-workers: needs --executor dask"),
        (
            ["--executor", "dask", "--scheduler", "h:8786"],
            "error: --scheduler: expected an address like tcp://HOST:PORT, got 'h:8786'",
        ),
        (
            ["--executor", "dask", "--scheduler", "tcp://h:1", "--dask-workers", "2"],
            "error: --dask-workers: give only one of --scheduler, --dask-workers, --slurm "
            "(got --scheduler and --dask-workers)",
        ),
        (["--executor", "ray"], "'ray' is not one of 'local', 'dask'"),
    ],
)
def test_executor_options_are_validated(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(
        main, ["run", "width-sweep", "--dry-run", "--store", str(tmp_path), *args]
    )
    assert result.exit_code == EXIT_USAGE
    assert message in result.output.strip().splitlines()[-1]


def test_slurm_section_builds_the_jobqueue_arguments(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(
        '[slurm]\ncores = 8\nmemory = "32GB"\nwalltime = "1-02:00:00"\njobs = 4\n'
        'queue = "gpu"\naccount = "lab"\njob_extra_directives = ["--gres=gpu:1"]\n'
    )
    config = SlurmConfig.from_file(path)
    assert config.jobs == 4
    kwargs = config.cluster_kwargs()
    assert kwargs["cores"] == kwargs["processes"] == 8  # one thread per worker process
    assert (kwargs["memory"], kwargs["walltime"]) == ("32GB", "1-02:00:00")
    assert (kwargs["queue"], kwargs["account"]) == ("gpu", "lab")
    assert kwargs["job_extra_directives"] == ["--gres=gpu:1"]
    assert kwargs["job_script_prologue"] == [f"export {k}=1" for k in THREAD_ENV]
    assert DaskCluster(slurm=config).local_workers is None


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"cores": 0}, "slurm.cores"),
        ({"jobs": "two"}, "slurm.jobs"),
        ({"memory": "lots"}, "slurm.memory"),
        ({"walltime": "2h"}, "slurm.walltime"),
        ({"cores": 2, "processes": 3}, "slurm.processes"),
        ({"gpus": 1}, "slurm.gpus"),
    ],
)
def test_slurm_section_errors_name_the_field(section: dict, field: str) -> None:
    with pytest.raises(SpecError, match=rf"^{field}: "):
        SlurmConfig.from_mapping(section)


def test_one_gpu_per_worker_when_there_are_several() -> None:
    assert [worker_device("cuda", i, 4) for i in range(5)] == [
        "cuda:0",
        "cuda:1",
        "cuda:2",
        "cuda:3",
        "cuda:0",
    ]
    assert worker_device("auto", 1, 2) == "cuda:1"
    assert worker_device("cuda", 3, 1) == "cuda"  # one GPU: every worker shares it
    assert worker_device("cuda:1", 0, 4) == "cuda:1"  # an explicit device is kept
    assert worker_device("cpu", 2, 4) == "cpu"
    named = worker_device("cuda", "tcp://10.0.0.7:40000", 2)
    assert named in ("cuda:0", "cuda:1") and named == worker_device(
        "cuda", "tcp://10.0.0.7:40000", 2
    )


def test_a_schema_5_store_gains_the_attempts_log(tmp_path: Path) -> None:
    """Stores from before the attempts log open, keep their tasks, and log new attempts."""
    import sqlite3

    from escapelab.runner.store import DB_NAME, SCHEMA_VERSION

    db = Store(tmp_path)
    db.register("width-sweep", {}, "h", "0.2.0")
    db.save_task("h", "old", [{"x": 1}], 2.0, "0.2.0")
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("DROP TABLE attempts")
        conn.execute("PRAGMA user_version = 5")
    reopened = Store(tmp_path)
    assert reopened.records("h") == [{"task": "old", "x": 1}]
    assert reopened.worker_times("h") == {}  # the old task has no attempt logged
    reopened.save_task("h", "new", [{"x": 2}], 3.0, "0.2.0", worker="w1")
    reopened.save_failure("h", "bad", "RuntimeError: no", 0.5, worker="w2")
    assert reopened.worker_times("h") == {"w1": (1, 3.0)}
    assert [(f.key, f.error, f.worker) for f in reopened.failures("h")] == [
        ("bad", "RuntimeError: no", "w2")
    ]
    reopened.save_task("h", "bad", [{"x": 3}], 1.0, "0.2.0", worker="w1")  # the retry
    assert reopened.failures("h") == []
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6


def test_the_slurm_job_script_asks_for_what_the_section_says() -> None:
    """dask-jobqueue accepts the arguments and writes them into the job script (no SLURM
    needed: the script is built, not submitted)."""
    jobqueue = pytest.importorskip("dask_jobqueue")
    config = SlurmConfig(
        cores=4, memory="8GB", walltime="00:30:00", account="lab", job_extra_directives=("-N 1",)
    )
    with jobqueue.SLURMCluster(**config.cluster_kwargs()) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -A lab" in script and "#SBATCH -t 00:30:00" in script
    assert "#SBATCH -N 1" in script and "#SBATCH --cpus-per-task=4" in script
    assert "export OMP_NUM_THREADS=1" in script
    assert "--nworkers 4" in script and "--nthreads 1" in script
