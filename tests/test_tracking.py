"""Fast checks of the pieces the sweep engine is built from (no Ray cluster, no training).

Run: .venv/bin/python -m pytest tests/test_tracking.py -q
"""

from __future__ import annotations

import pickle

import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from sweep_helpers import micro_spec

from orchestrator import results, space
from orchestrator.errors import SpecError
from orchestrator.tracking import MlflowTracker, SweepInfo, error_summary, recipe_params, report_metrics


def test_error_summary_keeps_the_last_exception_line():
    trace = (
        "Traceback (most recent call last):\n  File \"x.py\", line 3, in f\n    raise X\n"
        "ray.exceptions.RayTaskError(TrialDivergedError): ray::run_trial()\n"
        "orchestrator.trial.TrialDivergedError: training diverged at generator step 1: loss is not finite\n"
    )
    assert error_summary(trace) == "TrialDivergedError: training diverged at generator step 1: loss is not finite"
    assert error_summary(None) == ""


def test_report_metrics_drop_ray_bookkeeping_and_non_numbers():
    result = {"score": 0.5, "step": 20.0, "time_this_iter_s": 1.0, "trial_id": "abc", "done": False,
              "config": {"a": 1}, "fd": float("nan")}
    assert report_metrics(result) == {"score": 0.5, "step": 20.0}


def test_recipe_params_are_the_flattened_recipe_plus_raw_simplex_draws():
    params = recipe_params(
        {"steps": 4}, {"category_mix.text": 0.5, "category_mix.landscape": 0.5, "category_mix.raw.text": 0.3}
    )
    assert params["category_mix.text"] == "0.5" and params["steps"] == "4"
    assert params["optuna.category_mix.raw.text"] == "0.3" and "category_mix.raw.text" not in params


def test_tracker_pickles_as_plain_data_and_reattaches_to_its_parent(tmp_path):
    info = SweepInfo("exp", "sweep123", f"sqlite:///{tmp_path / 'm.db'}", "name: exp\n", {"spec_hash": "h"})
    tracker = MlflowTracker(info, {"steps": 4})
    tracker.setup()
    copy = pickle.loads(pickle.dumps(tracker))  # what Ray does with tuner.pkl on --resume
    assert copy._client is None
    copy.setup()
    assert copy.parent_id == tracker.parent_id
    runs = MlflowClient(info.uri).search_runs([copy._experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["spec_hash"] == "h"


def test_pareto_front_flips_minimised_objectives(tmp_path, micro_checkpoints):
    spec = micro_spec(
        tmp_path, micro_checkpoints,
        objectives=[{"metric": "fd", "mode": "min"}, {"metric": "diversity", "mode": "max"}],
    )
    trials = pl.DataFrame({
        "trial_id": ["a", "b", "c", "d"],
        "status": ["FINISHED", "FINISHED", "FINISHED", "FAILED"],
        "fd": [1.0, 2.0, 3.0, 0.0],
        "diversity": [0.5, 0.9, 0.4, 1.0],
    })
    assert results.pareto_front(trials, spec)["trial_id"].to_list() == ["a", "b"]  # c is dominated by a


def test_world_options_are_validated_with_their_line(tmp_path, micro_checkpoints):
    with pytest.raises(SpecError) as err:
        micro_spec(tmp_path, micro_checkpoints, world={"name": "tiny", "checkpoint": "x"})
    assert "world.checkpoint: unknown key 'checkpoint'; did you mean 'checkpoints'?" in str(err.value)
    spec = micro_spec(tmp_path, micro_checkpoints)
    assert spec.world.name == "tiny" and spec.world.options["checkpoints"] == str(micro_checkpoints)
    assert micro_spec(tmp_path, micro_checkpoints, world="tiny").world.options == {}


def test_define_by_run_space_pickles():
    """Ray's OptunaSearch pickles its space with the searcher state (a closure would not survive)."""
    from orchestrator.spec import SearchEntry

    sample = space.build_space({"t2i_edit_ratio": SearchEntry.model_validate({"float": [0.1, 0.9]})})
    assert pickle.loads(pickle.dumps(sample)).entries[0][0] == "t2i_edit_ratio"


def test_a_run_whose_trial_tune_lost_is_trashed_at_the_end(tmp_path):
    """A driver killed between starting a trial and its next state snapshot leaves a child run for a
    trial the resumed sweep never knows: it is closed as LOST and trashed, one live run per trial."""
    from ray.tune.experiment import Trial

    info = SweepInfo("exp", "sweep123", f"sqlite:///{tmp_path / 'm.db'}", "name: exp\n", {})
    killed = MlflowTracker(info, {"steps": 4})
    killed.setup()
    kept, lost = (Trial("noop", config={}, trial_id=t, stub=True) for t in ("kept0001", "lost0001"))
    for trial in (kept, lost):
        killed.on_trial_start(0, [], trial)

    resumed = pickle.loads(pickle.dumps(killed))
    resumed.setup()
    kept.set_status(Trial.TERMINATED)
    resumed.on_experiment_end([kept])

    client = MlflowClient(info.uri)
    live = client.search_runs([resumed._experiment_id], "tags.role = 'trial'")
    assert [r.data.tags["trial_id"] for r in live] == ["kept0001"]
    assert live[0].info.status == "KILLED"  # terminated without a final report: STOPPED
    gone = client.get_run(killed.run_id(lost))
    assert gone.info.lifecycle_stage == "deleted" and gone.data.tags["outcome"] == "LOST"
    assert client.get_run(resumed.parent_id).info.status == "FINISHED"


def test_summary_says_which_benchmark_the_scores_come_from(tmp_path, micro_checkpoints):
    from rich.console import Console

    spec = micro_spec(tmp_path, micro_checkpoints)
    trials = pl.DataFrame({
        "trial_id": ["a", "b"], "status": ["FINISHED", "STOPPED"], "t2i_edit_ratio": [0.3, 0.6],
        "t2i_score": [0.5, 0.6], "edit_score": [0.4, 0.3], "score": [0.45, 0.45], "wall_s": [10.0, 4.0],
    })
    console = Console(record=True, width=160)
    results.print_summary(results.Tables(trials, pl.DataFrame(), trials.head(1)), spec, console)
    text = console.export_text()
    assert "STOPPED trials: scores from the quick benchmark (8 items)" in text
    assert "FINISHED ones from the full benchmark (16 items)" in text
