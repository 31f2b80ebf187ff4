"""The sweep promote reads back: run-folder checks, the finished trials, each trial's recipe.

Run: .venv/bin/python -m pytest tests/test_promote_source.py -q

Hand-made run folders (promote_helpers.fake_sweep) and a fresh MLflow store check the reading in
seconds; the slow test checks on the shared micro sweep that the stored recipes are the rebuilt ones.
"""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
import yaml
from mlflow.tracking import MlflowClient
from promote_helpers import TRIALS, fake_sweep, ids, micro
from sweep_helpers import write_spec

from orchestrator.promote.source import PromoteError, open_sweep
from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec, resolved_dict
from trainers.recipe import Recipe


def test_spec_kept_in_the_run_folder_is_found(tmp_path, micro_checkpoints):
    """A run folder with the resolved spec as spec.yaml needs no --spec (and the resolved spec hashes the same)."""
    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints)
    resolved = yaml.safe_dump(resolved_dict(load_spec(spec_path)), sort_keys=False)
    RunDir(run_dir).spec.write_text(resolved)
    assert open_sweep(run_dir).spec == load_spec(spec_path)


def test_run_folder_problems_are_one_line_errors(tmp_path, micro_checkpoints):
    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints)
    (tmp_path / "other").mkdir()
    other = write_spec(tmp_path / "other", micro_checkpoints, search={"guidance_scale": {"float": [1.0, 3.0]}})
    bare = tmp_path / "bare"
    bare.mkdir()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    RunDir(unfinished).marker.write_text(RunDir(run_dir).marker.read_text())
    cases = [
        ((tmp_path / "nope", spec_path), f"{tmp_path / 'nope'}: no such run folder$"),
        ((bare, spec_path), r"bare: not a sweep run folder \(no sweep.json\)$"),
        ((run_dir, None), "no spec.yaml in the run folder; pass the sweep's spec with --spec PATH$"),
        ((run_dir, other), "not the spec the sweep in .* ran with"),
        ((unfinished, spec_path), "trials.parquet, .* not found: run the sweep"),
    ]
    for args, message in cases:
        with pytest.raises(PromoteError, match=message):
            open_sweep(*args)


def test_finished_trials_have_every_objective(tmp_path, micro_checkpoints):
    trials = [*TRIALS, ("g", "FINISHED", float("nan"), 0.5), ("h", "FINISHED", None, 0.5)]
    sweep = open_sweep(*fake_sweep(tmp_path, micro_checkpoints, trials=trials))
    assert ids(sweep.finished().to_dicts()) == ["a", "b", "c", "d"]
    assert sweep.param_columns == ["t2i_edit_ratio"] and sweep.sweep_id == "sweep-1"


def _conditional_sweep(tmp_path, micro_checkpoints):
    """guidance_scale is sampled only when teacher_switch_step is 1: trial y did not sample it (null)."""
    search = {
        "teacher_switch_step": {"int": [0, 2]},
        "guidance_scale": {"float": [1.0, 2.0], "when": {"teacher_switch_step": 1}},
    }
    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints, search=search)
    table = pl.DataFrame(
        {
            "trial_id": ["x", "y"],
            "status": ["FINISHED", "FINISHED"],
            "teacher_switch_step": [1, 2],
            "guidance_scale": [1.5, None],
            "t2i_score": [0.5, 0.6],
            "edit_score": [0.5, 0.4],
            "mlflow_run_id": [None, None],
        }
    )
    table.write_parquet(RunDir(run_dir).trials)
    return open_sweep(run_dir, spec_path)


def test_rebuilt_recipe_keeps_the_base_for_an_unsampled_param(tmp_path, micro_checkpoints):
    sweep = _conditional_sweep(tmp_path, micro_checkpoints)
    x, y = sweep.trials.to_dicts()
    base = sweep.spec.base_recipe
    assert sweep.recipe(x) == Recipe.from_params(sweep.spec.base, {"teacher_switch_step": 1, "guidance_scale": 1.5})
    assert sweep.recipe(y).guidance_scale == base.guidance_scale and sweep.recipe(y).teacher_switch_step == 2


def _store(run_dir, trial_id: str, checkpoint: str, recipe: Recipe) -> None:
    folder = RunDir(run_dir).trial(trial_id) / checkpoint
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(recipe.to_yaml())


def test_the_checkpoint_recipe_comes_before_the_row(tmp_path, micro_checkpoints):
    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints)
    sweep = open_sweep(run_dir, spec_path)
    b = next(row for row in sweep.trials.to_dicts() if row["trial_id"] == "b")
    # values the row does not hold: proof that the file is read, and that the latest checkpoint is
    _store(run_dir, "b", "checkpoint_000000", Recipe.from_params(sweep.spec.base, {"seed": 11}))
    _store(run_dir, "b", "checkpoint_000001", Recipe.from_params(sweep.spec.base, {"seed": 12}))
    assert sweep.recipe(b).seed == 12
    (RunDir(run_dir).checkpoints("b")[-1] / "recipe.yaml").write_text("no_such_field: 1\n")
    with pytest.raises(ValueError, match="no_such_field"):  # a broken file is an error, not a silent rebuild
        sweep.recipe(b)


def test_the_mlflow_recipe_when_the_run_folder_keeps_no_checkpoint(tmp_path, micro_checkpoints):
    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints)
    sweep = open_sweep(run_dir, spec_path)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("micro")).info.run_id
    client.log_text(run_id, Recipe.from_params(sweep.spec.base, {"seed": 21}).to_yaml(), "recipe.yaml")
    a, b = sweep.trials.to_dicts()[:2]
    assert sweep.recipe(a | {"mlflow_run_id": run_id}, client).seed == 21
    rebuilt = Recipe.from_params(sweep.spec.base, {"t2i_edit_ratio": 0.2})
    assert sweep.recipe(b, client) == rebuilt == sweep.recipe(b)  # run-b is no run of this store
    _store(run_dir, "a", "checkpoint_000000", Recipe.from_params(sweep.spec.base, {"seed": 31}))
    assert sweep.recipe(a | {"mlflow_run_id": run_id}, client).seed == 31  # the trainer's own copy first


@pytest.mark.slow
def test_stored_recipes_of_the_micro_sweep_are_the_rebuilt_ones(micro_sweep, tmp_path):
    """The recipe a candidate gets is the one it got when promote rebuilt it from trials.parquet."""
    run_dir, _, client = micro(micro_sweep)
    sweep = open_sweep(run_dir, micro_sweep)
    without_folders = dataclasses.replace(sweep, run=RunDir(tmp_path))  # nothing stored: rebuilt from the row
    rows = sweep.finished().to_dicts()
    assert rows and all(sweep.run.checkpoints(row["trial_id"]) for row in rows)
    logged = [{a.path for a in client.list_artifacts(row["mlflow_run_id"])} for row in rows]
    assert all("recipe.yaml" in paths for paths in logged)  # so each of the three ways is taken below
    for row in rows:
        rebuilt = without_folders.recipe(row)
        assert sweep.recipe(row) == without_folders.recipe(row, client) == rebuilt, row["trial_id"]
        assert rebuilt.t2i_edit_ratio == row["t2i_edit_ratio"]
