"""The sweep engine (orchestrator/sweep/engine.py): its run folder, its Tuner, and whole micro sweeps.

Run: .venv/bin/python -m pytest tests/test_sweep_engine.py -q
The run-folder and Tuner checks need no Ray. The `slow` ones run end to end on the micro world
(Ray Tune + OptunaSearch + ASHA -> parquet + MLflow); one local Ray (2 CPUs) is shared by them,
and each sweep trains real micro DMD trials.
"""

from __future__ import annotations

import optuna
import polars as pl
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from sweep_helpers import micro_spec, mlflow_runs

from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec, spec_hash
from orchestrator.summary import sorted_trials
from orchestrator.sweep import engine
from orchestrator.sweep.engine import SweepError, prepare_run_dir, run_sweep, sweep_info, trial_dirname


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


on_ray = pytest.mark.usefixtures("ray_session")

SPEC = """\
name: engine
search: {t2i_edit_ratio: {float: [0.1, 0.9]}}
objectives: [{metric: t2i_score, mode: max}, {metric: fd, mode: min}]
"""


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "engine.yaml"
    path.write_text(SPEC)
    return load_spec(path)


# -- the run folder and the Tuner (no Ray) --------------------------------------------------------


def test_a_new_run_folder_holds_the_resolved_spec_and_the_sweep_id(spec, tmp_path):
    run = RunDir.of(tmp_path / "runs", spec.name)
    sweep_id = prepare_run_dir(run, spec, resume=False, fresh=False, console=None)
    assert run.record() == {"sweep_id": sweep_id, "spec_hash": spec_hash(spec), "name": "engine"}
    assert load_spec(run.spec) == spec and spec_hash(load_spec(run.spec)) == spec_hash(spec)
    assert prepare_run_dir(run, spec, resume=True, fresh=False, console=None) == sweep_id  # --resume: the same id


def test_existing_run_dir_needs_resume_or_fresh(spec, tmp_path):
    run = RunDir.of(tmp_path / "runs", spec.name)
    run.path.mkdir(parents=True)
    with pytest.raises(SweepError, match=f"^{run.path} exists: use --resume to continue that sweep, or --fresh"):
        prepare_run_dir(run, spec, resume=False, fresh=False, console=None)
    with pytest.raises(SweepError, match=f"^{run.path}: no sweep to resume; run without --resume to start it$"):
        prepare_run_dir(run, spec, resume=True, fresh=False, console=None)


def test_resume_refuses_a_changed_spec(spec, tmp_path):
    run = RunDir.of(tmp_path / "runs", spec.name)
    run.create("name: engine\n", {"sweep_id": "s1", "spec_hash": "another", "name": "engine"})
    with pytest.raises(SweepError, match="the spec changed since this sweep started; resume with the original spec"):
        prepare_run_dir(run, spec, resume=True, fresh=False, console=None)


def test_fresh_archives_the_old_folder_and_says_where(spec, tmp_path):
    from rich.console import Console

    run = RunDir.of(tmp_path / "runs", spec.name)
    old = prepare_run_dir(run, spec, resume=False, fresh=False, console=None)
    console = Console(record=True, width=200)
    new = prepare_run_dir(run, spec, resume=False, fresh=True, console=console)
    (archive,) = run.path.parent.glob("engine.archived-*")
    assert console.export_text() == f"archived the previous sweep to {archive}\n"
    assert RunDir(archive).record()["sweep_id"] == old != new == run.record()["sweep_id"]


def test_sweep_info_carries_the_provenance_and_the_comparison_view(spec, tmp_path):
    run = RunDir.of(tmp_path / "runs", spec.name)
    info = sweep_info(spec, "s1", run)
    assert (info.name, info.sweep_id, info.uri) == ("engine", "s1", "sqlite:///mlflow.db")
    assert info.tags["spec_hash"] == spec_hash(spec) and info.tags["run_dir"] == str(run.path)
    assert info.tags["mlflow.source.git.commit"]  # a commit, or "unknown" outside a git checkout
    assert info.run_dir == run and yaml.safe_load(info.spec_yaml)["name"] == "engine"
    assert info.view["orderByKey"] == "metrics.`t2i_score`" and "params.`t2i_edit_ratio`" in info.view["selectedColumns"]


def test_trial_folders_are_named_by_trial_id():
    from ray.tune.experiment import Trial

    assert trial_dirname(Trial("noop", trial_id="ab12cd34", stub=True)) == "trial_ab12cd34"


def test_asha_stops_on_the_scheduler_metric_in_generator_steps(spec, tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    assert engine._scheduler(spec) is None  # no scheduler section: FIFO
    path = tmp_path / "asha.yaml"
    path.write_text(SPEC + "base: {steps: 40}\nscheduler: {name: asha, metric: score, grace_steps: 10, reduction_factor: 2}\n")
    asha = engine._scheduler(load_spec(path))
    assert isinstance(asha, ASHAScheduler)
    assert (asha._time_attr, asha._metric, asha._mode, asha._max_t, asha._reduction_factor) == ("step", "score", "max", 40, 2)


# -- whole sweeps on Ray --------------------------------------------------------------------------


@pytest.mark.slow
@on_ray
def test_micro_sweep_writes_tables_and_nested_mlflow_runs(tmp_path, micro_checkpoints, capsys):
    spec = micro_spec(tmp_path, micro_checkpoints)
    outcome = run_sweep(spec, runs_dir=tmp_path / "runs")

    shown = capsys.readouterr().out
    assert [line.split("started ")[1][:5] for line in shown.splitlines() if " started (" in line] == [
        "(1/4)", "(2/4)", "(3/4)", "(4/4)"
    ]
    assert "Configuration for experiment" not in shown and "tensorboard" not in shown  # Ray's own output is off

    trials = pl.read_parquet(tmp_path / "runs" / "micro" / "trials.parquet")
    assert trials.height == 4 and trials["trial_id"].n_unique() == 4
    assert set(trials["status"]) <= {"FINISHED", "STOPPED"}
    for column in ("t2i_edit_ratio", "t2i_score", "edit_score", "score", "wall_s", "mlflow_run_id",
                   "t2i_score_se", "edit_score_se", "score_se", "t2i_score_se/text"):
        assert trials[column].null_count() == 0, column
    assert (trials["score_se"] >= 0).all()  # every score carries its SE (0 here: micro students score 0)
    assert trials["t2i_edit_ratio"].is_between(0.1, 0.9).all()
    curves = pl.read_parquet(tmp_path / "runs" / "micro" / "curves.parquet")
    finished = trials.filter(pl.col("status") == "FINISHED")["trial_id"]
    for trial_id in finished:
        assert curves.filter(pl.col("trial_id") == trial_id)["step"].to_list() == [2.0, 4.0]
    assert curves["score_se"].null_count() == 0

    parents, children = mlflow_runs(outcome.tracking_uri, "micro")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["spec_hash"] and parent.data.tags["mlflow.source.git.commit"]
    client = MlflowClient(outcome.tracking_uri)
    assert {"spec.yaml", "trials.parquet", "curves.parquet"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    by_trial = {run.data.tags["trial_id"]: run for run in children}
    assert set(by_trial) == set(trials["trial_id"])
    for row in trials.iter_rows(named=True):
        run = by_trial[row["trial_id"]]
        assert run.info.run_id == row["mlflow_run_id"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert float(run.data.params["t2i_edit_ratio"]) == row["t2i_edit_ratio"]
        assert run.data.params["category_mix.text"] == "1.0" and run.data.params["steps"] == "4"
        history = client.get_metric_history(run.info.run_id, "score")
        expected = [2, 4] if row["status"] == "FINISHED" else [2]
        assert [m.step for m in history] == expected
        assert [m.step for m in client.get_metric_history(run.info.run_id, "score_se")] == expected
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "recipe.yaml" in artifacts
        if row["status"] == "FINISHED":
            assert run.info.status == "FINISHED" and "samples.png" in artifacts
        else:
            assert run.info.status == "KILLED"


@pytest.mark.slow
@on_ray
def test_existing_run_dir_stops_run_sweep_before_anything_starts(tmp_path, micro_checkpoints):
    spec = micro_spec(tmp_path, micro_checkpoints)
    (tmp_path / "runs" / "micro").mkdir(parents=True)
    with pytest.raises(SweepError, match="--resume .* or --fresh"):
        run_sweep(spec, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
@on_ray
def test_diverging_trial_is_failed_with_its_reason(tmp_path, micro_checkpoints):
    """lr 1e30 diverges at the first step: that trial is FAILED everywhere, the other one finishes."""
    spec = micro_spec(
        tmp_path,
        micro_checkpoints,
        name="diverge",
        search={"lr_generator": {"grid": [1.0e-4, 1.0e30]}},
        objectives=[{"metric": "score", "mode": "max"}],
        sampler={"name": "grid", "seed": 0},
        scheduler=None,
        budget={"trials": 2, "concurrent": 2, "max_failures": 1},
    )
    outcome = run_sweep(spec, runs_dir=tmp_path / "runs")
    trials = outcome.tables.trials.sort("lr_generator")
    assert trials["status"].to_list() == ["FINISHED", "FAILED"]
    error = trials["error"][1]
    assert error.startswith("TrialDivergedError: training diverged at generator step")
    _, children = mlflow_runs(outcome.tracking_uri, "diverge")
    status = {run.data.params["lr_generator"]: run for run in children}
    assert status["1e+30"].info.status == "FAILED" and "diverged" in status["1e+30"].data.tags["error"]
    assert status["0.0001"].info.status == "FINISHED"


@pytest.mark.slow
@on_ray
def test_multi_objective_sweep_has_a_pareto_set_that_optuna_agrees_with(tmp_path, micro_checkpoints):
    spec = micro_spec(
        tmp_path,
        micro_checkpoints,
        name="joint",
        search={
            "category_mix": {"simplex": ["landscape", "portrait", "text"]},
            "teacher_switch_step": {"int": [0, 4]},
            "specialist_weight": {"float": [0.3, 1.0], "when": {"teacher_switch_step": [1, 2, 3]}},
            "t2i_edit_ratio": {"float": [0.1, 0.9], "step": 0.1},
        },
        base={**micro_spec(tmp_path, micro_checkpoints).base, "specialist": "text"},
        objectives=[{"metric": "fd", "mode": "min"}, {"metric": "diversity", "mode": "max"}],
        scheduler=None,
    )
    outcome = run_sweep(spec, runs_dir=tmp_path / "runs")
    pareto = pl.read_parquet(tmp_path / "runs" / "joint" / "pareto.parquet")
    assert pareto.height >= 1
    finished = outcome.tables.trials.filter(pl.col("status") == "FINISHED")
    study = optuna.create_study(directions=spec.directions)
    for row in finished.iter_rows(named=True):
        study.add_trial(
            optuna.trial.create_trial(
                values=[row["fd"], row["diversity"]], user_attrs={"trial_id": row["trial_id"]}
            )
        )
    assert set(pareto["trial_id"]) == {t.user_attrs["trial_id"] for t in study.best_trials}
    assert {"category_mix.landscape", "category_mix.text"} <= set(outcome.tables.trials.columns)
    assert not any(".raw." in column for column in outcome.tables.trials.columns)
    ranked = sorted_trials(outcome.tables, spec)
    assert ranked["fd"].drop_nulls().is_sorted()


def _crash_spec(tmp_path, micro_checkpoints, name: str, precisions: list[str], max_failures: int):
    """mixed_precision 'fp16' raises inside the trainer (a ValueError, not a divergence)."""
    return micro_spec(
        tmp_path,
        micro_checkpoints,
        name=name,
        search={"mixed_precision": {"grid": precisions}},
        objectives=[{"metric": "score", "mode": "max"}],
        sampler={"name": "grid", "seed": 0},
        scheduler=None,
        budget={"trials": len(precisions), "concurrent": 2, "max_failures": max_failures},
    )


@pytest.mark.slow
@on_ray
def test_a_crashing_trial_is_retried_as_allowed_then_failed_and_the_others_finish(tmp_path, micro_checkpoints, capsys):
    spec = _crash_spec(tmp_path, micro_checkpoints, "crash", ["no", "fp16"], max_failures=1)
    outcome = run_sweep(spec, runs_dir=tmp_path / "runs")
    trials = outcome.tables.trials.sort("mixed_precision")
    assert trials["mixed_precision"].to_list() == ["fp16", "no"]
    assert trials["status"].to_list() == ["FAILED", "FINISHED"]
    crashed = trials.row(0, named=True)
    assert crashed["error"].startswith("ValueError: mixed_precision='fp16' is not supported")
    shown = capsys.readouterr().out
    retries = [line for line in shown.splitlines() if f"trial {crashed['trial_id']}  retrying:" in line]
    assert len(retries) == 1, shown  # budget.max_failures = 1: one retry, then FAILED
    assert any(f"trial {crashed['trial_id']}  FAILED: ValueError" in line for line in shown.splitlines())
    _, children = mlflow_runs(outcome.tracking_uri, "crash")
    by_precision = {run.data.params["mixed_precision"]: run for run in children}
    assert len(children) == 2
    assert by_precision["fp16"].info.status == "FAILED"
    assert by_precision["fp16"].data.tags["error"].startswith("ValueError: mixed_precision='fp16'")
    assert by_precision["no"].info.status == "FINISHED"


@pytest.mark.slow
@on_ray
def test_a_sweep_with_no_finished_trial_exits_non_zero_with_the_cause(tmp_path, micro_checkpoints, capsys):
    from sweep_helpers import write_spec

    from orchestrator.sweep.cli import main

    path = write_spec(
        tmp_path, micro_checkpoints, name="allcrash",
        search={"mixed_precision": {"grid": ["fp16"]}, "seed": {"grid": [0, 1]}},
        objectives=[{"metric": "score", "mode": "max"}], sampler={"name": "grid", "seed": 0},
        scheduler=None, budget={"trials": 2, "concurrent": 2, "max_failures": 0},
    )
    with pytest.raises(SystemExit) as exited:
        main([str(path), "--runs-dir", str(tmp_path / "runs")])
    assert exited.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: no trial finished: 2 of 2 failed, 2 with ValueError")
    assert (tmp_path / "runs" / "allcrash" / "trials.parquet").is_file()  # the tables are still written


@pytest.mark.slow
@on_ray
def test_resume_of_a_sweep_killed_before_its_first_snapshot_starts_it(tmp_path, micro_checkpoints):
    """The run dir exists (sweep.json, spec.yaml) but Tune saved nothing yet: --resume runs the sweep."""
    spec = micro_spec(tmp_path, micro_checkpoints, name="early", scheduler=None,
                      budget={"trials": 2, "concurrent": 2})
    run_dir = tmp_path / "runs" / "early"
    sweep_id = prepare_run_dir(RunDir(run_dir), spec, resume=False, fresh=False, console=None)  # what the killed driver did
    assert sorted(p.name for p in run_dir.iterdir()) == ["spec.yaml", "sweep.json"]
    assert not list(run_dir.parent.glob(".early.new-*"))  # made beside its place, then moved there
    outcome = run_sweep(spec, runs_dir=tmp_path / "runs", resume=True)
    assert outcome.tables.trials["status"].to_list() == ["FINISHED", "FINISHED"]
    parents, children = mlflow_runs(outcome.tracking_uri, "early")
    assert [p.data.tags["sweep_id"] for p in parents] == [sweep_id] and len(children) == 2
