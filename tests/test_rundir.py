"""The run folder's names and its life: made whole, archived, its trials' checkpoints and grids.

Run: .venv/bin/python -m pytest tests/test_rundir.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.rundir import RunDir


def test_every_file_of_a_run_lies_in_its_folder(tmp_path):
    run = RunDir.of(tmp_path / "runs", "micro")
    assert run.path == (tmp_path / "runs" / "micro").resolve() and run.name == "micro"
    named = {
        run.marker: "sweep.json", run.spec: "spec.yaml", run.driver_log: "driver.log",
        run.trials: "trials.parquet", run.curves: "curves.parquet", run.pareto: "pareto.parquet",
        run.journal: "mlflow_pending.jsonl", run.outbox_files: "mlflow_pending",
    }
    for path, name in named.items():
        assert path == run.path / name
    assert run.tables == [run.trials, run.curves, run.pareto]
    assert run.trial("ab12cd34") == run.path / "trial_ab12cd34"
    assert run.promoted("r1") == run.path / "promoted" / "r1"
    assert RunDir(str(run.path)) == run  # a str is a path too


def test_of_resolves_a_relative_runs_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert RunDir.of("runs", "x").path == tmp_path.resolve() / "runs" / "x"


def _checkpoint(run: RunDir, trial_id: str, n: int, grid: bool) -> Path:
    folder = run.trial(trial_id) / f"checkpoint_{n:06d}"
    folder.mkdir(parents=True)
    if grid:
        RunDir.samples_in(folder).write_bytes(b"png")
    return folder


def test_samples_come_from_the_last_checkpoint_that_has_a_grid(tmp_path):
    run = RunDir(tmp_path)
    assert run.checkpoints("t1") == [] and run.samples("t1") is None  # no trial folder at all
    first = _checkpoint(run, "t1", 1, grid=True)
    second = _checkpoint(run, "t1", 2, grid=True)
    _checkpoint(run, "t1", 3, grid=False)  # an intermediate one kept after the final (Tune keeps 2)
    (run.trial("t1") / "checkpoint_tmp.txt").write_text("a file, not a checkpoint")
    assert [p.name for p in run.checkpoints("t1")] == [first.name, second.name, "checkpoint_000003"]
    assert run.samples("t1") == second / "samples.png"
    assert RunDir.samples_in(first) == first / RunDir.SAMPLES_FILE


def test_create_makes_the_folder_whole_beside_its_place(tmp_path):
    run = RunDir(tmp_path / "runs" / "micro")
    stale = tmp_path / "runs" / ".micro.new-killed"
    stale.mkdir(parents=True)  # left by a start killed between making and moving its folder
    record = {"sweep_id": "s1", "spec_hash": "h", "name": "micro"}
    run.create("name: micro\n", record)
    assert sorted(p.name for p in run.path.iterdir()) == ["spec.yaml", "sweep.json"]
    assert run.spec.read_text() == "name: micro\n" and run.record() == record
    assert json.loads(run.marker.read_text()) == record
    assert sorted(p.name for p in run.path.parent.iterdir()) == ["micro"]  # no staging folder left


def test_create_refuses_to_replace_an_existing_folder(tmp_path):
    run = RunDir(tmp_path / "micro")
    (run.path / "trial_a").mkdir(parents=True)
    (run.path / "trial_a" / "result.json").write_text("{}")
    with pytest.raises(OSError):
        run.create("name: micro\n", {"sweep_id": "s2"})
    assert (run.path / "trial_a" / "result.json").is_file()


def test_archive_moves_the_folder_aside_with_its_time(tmp_path):
    run = RunDir(tmp_path / "micro")
    run.create("name: micro\n", {"sweep_id": "s1"})
    archive = run.archive()
    assert not run.path.exists() and archive.parent == tmp_path
    assert archive.name.startswith("micro.archived-") and len(archive.name) == len("micro.archived-20260101-120000")
    assert RunDir(archive).record() == {"sweep_id": "s1"}


def test_record_of_a_folder_that_is_not_a_sweep_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        RunDir(tmp_path).record()


def test_result_files_are_every_trial_s_and_nothing_else(tmp_path):
    run = RunDir(tmp_path / "runs" / "r")
    for trial_id in ("b", "a"):
        run.trial(trial_id).mkdir(parents=True)
        (run.trial(trial_id) / RunDir.RESULT_FILE).write_text("{}\n")
    (run.path / "elsewhere").mkdir()
    (run.path / "elsewhere" / RunDir.RESULT_FILE).write_text("{}\n")
    assert run.result_files() == [run.trial("a") / "result.json", run.trial("b") / "result.json"]
