"""Tune's experiment on a storage of its own: the spec's `storage:` or `--storage` (a folder or a URI).

Run: .venv/bin/python -m pytest tests/test_storage.py -q

The run folder keeps the tables and sweep.json; the trials' checkpoints go to
`<storage>/<name>/<sweep id>`. The slow tests run micro sweeps (2 trials) with a storage folder and a
file:// URI (killed and resumed); object stores cannot be reached from here, so only their names are
checked (pyarrow resolves `s3://...?region=` and `gs://` without a request).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from sweep_helpers import MICRO_BASE, write_spec

from orchestrator import plots
from orchestrator.promote.source import open_sweep
from orchestrator.rundir import RunDir, experiment_in, join, local_folder, split, storage_root
from orchestrator.spec import load_spec
from orchestrator.sweep.engine import SweepError, prepare_run_dir
from orchestrator.yamlio import SpecError

SPEC = "name: cli\nsearch:\n  t2i_edit_ratio: {float: [0.1, 0.9]}\nobjectives: [{metric: score, mode: max}]\n"


def _load(tmp_path: Path, storage: str):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC + f"storage: {json.dumps(storage)}\n")
    return load_spec(path)


# -- the spec and the flag -------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["shared/ckpt", "/mnt/nfs/sweeps", "file:///mnt/nfs/sweeps",
                                     "s3://bucket/sweeps?region=eu-west-1", "gs://bucket/sweeps"])
def test_folders_and_uris_pyarrow_resolves_are_storages(tmp_path, storage):
    assert _load(tmp_path, storage).storage == storage


@pytest.mark.parametrize(
    "storage, message",
    [
        ("nope://bucket/x", "expected a URI of a filesystem pyarrow resolves (file://, s3://, gs://, ...), found "
                            "'nope://bucket/x' (pyarrow: Unrecognized filesystem type in URI: nope://bucket/x)"),
        ("file://relative/x", "found 'file://relative/x' (pyarrow: Unsupported hostname in non-Windows local URI"),
        ("spec.yaml", "expected a folder or a URI, found the file 'spec.yaml'"),
        ("", "expected a non-empty string, found ''"),
    ],
    ids=["unknown-scheme", "relative-file-uri", "a-file", "empty"],
)
def test_a_bad_storage_is_a_spec_problem_with_its_line(tmp_path, monkeypatch, storage, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as exc:
        _load(tmp_path, storage)
    (problem,) = exc.value.problems
    rendered = problem.render("spec.yaml")
    assert rendered.startswith("spec.yaml:5: storage: expected ") and message in rendered


def test_a_bad_storage_exits_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    from orchestrator.sweep import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(SPEC + "storage: nope://x\n")
    (tmp_path / "good.yaml").write_text(SPEC)
    for argv, expected in [
        (["bad.yaml"], "bad.yaml:5: storage: expected a URI of a filesystem pyarrow resolves"),
        (["good.yaml", "--storage", "nope://x"], "argument --storage: expected a URI of a filesystem pyarrow resolves"),
    ]:
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        out, err = capsys.readouterr()
        assert exited.value.code == 2 and expected in err and "Traceback" not in err and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "good.yaml"]  # no runs/, no mlflow.db


def test_the_flag_overrides_the_spec_and_goes_into_the_spec_the_sweep_runs(tmp_path, monkeypatch, capsys):
    from orchestrator.sweep import cli, engine

    seen = []

    def run_sweep(spec, **kwargs):
        seen.append(spec)
        raise engine.SweepError("stop")

    monkeypatch.setattr(engine, "run_sweep", run_sweep)
    (tmp_path / "spec.yaml").write_text(SPEC + f"storage: {tmp_path / 'from-spec'}\n")
    for flags, expected in [([], str(tmp_path / "from-spec")), (["--storage", "file:///mnt/x"], "file:///mnt/x")]:
        with pytest.raises(SystemExit):
            cli.main([str(tmp_path / "spec.yaml"), *flags])
        assert seen.pop().storage == expected
    capsys.readouterr()


# -- where the experiment goes ---------------------------------------------------------------------------


def test_experiment_locations_on_folders_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_root("shared") == str(tmp_path.resolve() / "shared")  # relative to the working directory
    assert storage_root("s3://bucket/sweeps/") == "s3://bucket/sweeps"
    assert experiment_in("s3://bucket/sweeps?region=eu-west-1", "micro", "id1") == "s3://bucket/sweeps/micro/id1?region=eu-west-1"
    assert split("s3://bucket/sweeps/micro/id1?region=eu-west-1") == ("s3://bucket/sweeps/micro?region=eu-west-1", "id1")
    assert split("/mnt/x/micro") == ("/mnt/x", "micro") and join("/mnt/x", "micro", "id1") == "/mnt/x/micro/id1"
    assert local_folder("file:///mnt/a%20b") == Path("/mnt/a b") and local_folder("/mnt/x") == Path("/mnt/x")
    assert local_folder("gs://bucket/x") is None


def test_a_run_folder_opens_with_the_experiment_its_record_names(tmp_path):
    here = RunDir.of(tmp_path / "runs", "micro")
    here.create("name: micro\n", {"sweep_id": "id1", "spec_hash": "h", "name": "micro"})
    assert RunDir.open(here.path) == here and here.experiment == str(here.path)  # no storage: as before
    assert here.tune_location == (str(here.path.parent), "micro") and here.confirm.experiment == str(here.path / "confirm")

    shared = RunDir.of(tmp_path / "runs", "remote")
    shared.create("name: remote\n", {"sweep_id": "id2", "spec_hash": "h", "name": "remote", "storage": "gs://b/s"})
    run = RunDir.open(shared.path)
    assert run.experiment == "gs://b/s/remote/id2" and run.tune_location == ("gs://b/s/remote", "id2")
    assert run.confirm.experiment == "gs://b/s/remote/id2/confirm" and run.confirm.tune_location[1] == "confirm"
    assert run.local_experiment is None and run.checkpoints("t1") == [] and run.samples("t1") is None
    assert run.result_files() == [] and run.trials == shared.trials  # the tables stay in the run folder
    with pytest.raises(ValueError, match="an object store"):
        run.trial("t1")


def test_the_record_names_the_storage_and_resume_keeps_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = _load(tmp_path, "shared")
    run = RunDir.of(tmp_path / "runs", spec.name)
    sweep_id = prepare_run_dir(run, spec, resume=False, fresh=False, console=None)
    kept = str(tmp_path.resolve() / "shared")
    assert run.record()["storage"] == kept
    assert RunDir.open(run.path).experiment == f"{kept}/cli/{sweep_id}"
    no_storage = spec.model_copy(update={"storage": None})
    assert prepare_run_dir(run, no_storage, resume=True, fresh=False, console=None) == sweep_id  # the record's
    assert prepare_run_dir(run, spec.model_copy(update={"storage": kept}), resume=True, fresh=False, console=None) == sweep_id
    with pytest.raises(SweepError, match=f"keeps its Tune experiment on the storage {kept} \\(resume with --storage {kept}, "):
        prepare_run_dir(run, spec.model_copy(update={"storage": "/elsewhere"}), resume=True, fresh=False, console=None)

    local = RunDir.of(tmp_path / "runs", "local")
    prepare_run_dir(local, no_storage.model_copy(update={"name": "local"}), resume=False, fresh=False, console=None)
    with pytest.raises(SweepError, match="keeps its Tune experiment in its run folder \\(resume with no storage"):
        prepare_run_dir(local, spec.model_copy(update={"name": "local"}), resume=True, fresh=False, console=None)


# -- micro sweeps ----------------------------------------------------------------------------------------------


def _micro(tmp_path: Path, checkpoints: Path, **sections) -> Path:
    return write_spec(tmp_path, checkpoints, scheduler=None, budget={"trials": 2, "concurrent": 2}, **sections)


REPORTS = MICRO_BASE["steps"] // MICRO_BASE["report_every"]  # of a trial that ran once, start to end


def _assert_kept_on(run_dir: Path, experiment: Path) -> pl.DataFrame:
    """Trial folders with checkpoints on the storage, none in the run folder; the tables read them; promote finds them."""
    trials = pl.read_parquet(RunDir(run_dir).trials)
    assert trials.height == 2 and set(trials["status"]) == {"FINISHED"} and min(trials["reports"]) >= REPORTS
    assert not list(run_dir.glob("trial_*")) and not list(run_dir.glob("experiment_state-*.json"))
    assert list(experiment.glob("experiment_state-*.json"))
    sweep = open_sweep(run_dir)
    for row in sweep.finished().iter_rows(named=True):
        folders = sweep.run.checkpoints(row["trial_id"])
        assert folders and all(f.is_relative_to(experiment) for f in folders)
        assert sweep._checkpoint_recipe(row["trial_id"]) is not None  # recipe.yaml read from the storage
    return trials


@pytest.mark.slow
def test_a_sweep_with_a_storage_folder_keeps_its_checkpoints_there(tmp_path, micro_checkpoints):
    from orchestrator.sweep.engine import run_sweep

    shared = tmp_path / "shared"  # as a folder every node mounts
    spec = load_spec(_micro(tmp_path, micro_checkpoints, storage=str(shared), confirm={"top": 1, "seeds": 2}))
    outcome = run_sweep(spec, runs_dir=tmp_path / "runs")
    run_dir = tmp_path / "runs" / "micro"
    experiment = shared / "micro" / RunDir(run_dir).record()["sweep_id"]
    assert outcome.run_dir == run_dir and outcome.experiment == str(experiment)
    assert set(_assert_kept_on(run_dir, experiment)["reports"]) == {REPORTS}
    confirm = pl.read_parquet(RunDir(run_dir).confirm_table)  # the confirmation stage's experiment: beside the trials
    assert confirm.height == 2 and set(confirm["status"]) == {"FINISHED"}
    assert {p.name.removeprefix("trial_") for p in (experiment / "confirm").glob("trial_*")} == set(confirm["trial_id"])
    assert not (run_dir / "confirm").exists()
    # the notebook's knee grid is read from the storage too
    front = pl.read_parquet(RunDir(run_dir).trials)
    assert plots.knee_samples(run_dir, front) is not None


@pytest.mark.slow
def test_a_killed_sweep_on_a_file_uri_resumes_from_it(tmp_path, micro_checkpoints):
    """--storage file://...: killed with one trial finished and one held, then --resume (no --storage: the
    record says where) finishes it from the storage without re-running the finished one."""
    from test_resume import _sweep, snapshot_status, wait_for

    from benchmarks.kill_soak import kill_group
    from orchestrator import gate

    spec = _micro(tmp_path, micro_checkpoints)
    uri = (tmp_path / "bucket").as_uri()
    run_dir = tmp_path / "runs" / "micro"
    held = tmp_path / "gate"
    gate.let_through(held, 1)
    first = _sweep(spec, "--storage", uri, finish_gate=held)

    def experiment() -> Path:
        return RunDir.open(run_dir).local_experiment if RunDir(run_dir).marker.is_file() else tmp_path / "none"

    def one_finished_and_one_held() -> bool:
        finished = [t for t, status in snapshot_status(experiment()).items() if status == "TERMINATED"]
        return len(finished) == 1 and len(gate.waiting(held) - gate.passed(held)) >= 1

    wait_for(one_finished_and_one_held, "a snapshot with one trial finished and one held", first)
    done_before = {t for t, status in snapshot_status(experiment()).items() if status == "TERMINATED"}
    kill_group(first)

    resumed = _sweep(spec, "--resume")
    out, _ = resumed.communicate(timeout=600)  # a hang guard only
    assert resumed.returncode == 0, out
    kept = f"{uri}/micro/{RunDir(run_dir).record()['sweep_id']}"
    assert RunDir(run_dir).record()["storage"] == uri and f"\ncheckpoints (the Tune experiment): {kept}\n" in out
    trials = _assert_kept_on(run_dir, experiment())
    before = trials.filter(pl.col("trial_id").is_in(list(done_before)))
    assert before.height == 1 and before["reports"].item() == REPORTS  # finished before the kill: not re-run
