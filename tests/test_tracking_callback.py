"""The driver's MLflow tracker (orchestrator/tracking/callback.py), driven as Tune drives it.

Run: .venv/bin/python -m pytest tests/test_tracking_callback.py -q
Trials are Tune stubs (`Trial(..., stub=True)`), the store a sqlite file: no Ray cluster, no training.
"""

from __future__ import annotations

import pickle

from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from orchestrator.tracking.callback import MlflowTracker, trial_params
from orchestrator.tracking.writer import SweepInfo
from trainers.recipe import Recipe


def test_trial_params_are_the_flattened_recipe_plus_raw_simplex_draws():
    params = trial_params(
        {"steps": 4}, {"category_mix.text": 0.5, "category_mix.landscape": 0.5, "category_mix.raw.text": 0.3}
    )
    assert params["category_mix.text"] == "0.5" and params["steps"] == "4"
    assert params["optuna.category_mix.raw.text"] == "0.3" and "category_mix.raw.text" not in params
    assert set(params) - {"optuna.category_mix.raw.text"} == set(Recipe().to_flat_dict())  # every field, as a str


def test_tracker_pickles_as_plain_data_and_reattaches_to_its_parent(tmp_path):
    info = SweepInfo("exp", "sweep123", f"sqlite:///{tmp_path / 'm.db'}", "name: exp\n", {"spec_hash": "h"})
    tracker = MlflowTracker(info, {"steps": 4})
    tracker.setup()
    copy = pickle.loads(pickle.dumps(tracker))  # what Ray does with tuner.pkl on --resume
    assert copy._outbox is None and copy._writer is None
    copy.setup()
    assert copy.parent_id == tracker.parent_id
    runs = MlflowClient(info.uri).search_runs([copy.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["spec_hash"] == "h"


def test_a_run_whose_trial_tune_lost_is_trashed_at_the_end(tmp_path):
    """A driver killed between starting a trial and its next state snapshot leaves a child run for a
    trial the resumed sweep never knows: it is closed as LOST and trashed, one live run per trial."""
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
    live = client.search_runs([resumed.experiment_id], "tags.role = 'trial'")
    assert [r.data.tags["trial_id"] for r in live] == ["kept0001"]
    assert live[0].info.status == "FINISHED"  # terminated without a final report: stopped early
    gone = client.get_run(killed.run_id(lost))
    assert gone.info.lifecycle_stage == "deleted" and gone.data.tags["outcome"] == "lost"
    assert client.get_run(resumed.parent_id).info.status == "FINISHED"


def test_a_failed_trial_closes_with_its_error_and_recipe(tmp_path, monkeypatch):
    from orchestrator.tracking import callback

    # A stub trial has no storage to read an error file from (tests/test_ray_status.py reads one).
    monkeypatch.setattr(callback, "trial_error", lambda trial: "ValueError: " + "x" * 6000)
    info = SweepInfo("exp", "sweep123", f"sqlite:///{tmp_path / 'm.db'}", "name: exp\n", {})
    tracker = MlflowTracker(info, {"steps": 4})
    tracker.setup()
    trial = Trial("noop", config={"t2i_edit_ratio": 0.3}, trial_id="bad00001", stub=True)
    tracker.on_trial_start(0, [trial], trial)
    tracker.on_trial_result(0, [trial], trial, {"step": 2.0, "score": 0.25, "pid": 7})
    trial.set_status(Trial.ERROR)
    tracker.on_trial_error(0, [trial], trial)
    tracker.on_trial_error(0, [trial], trial)  # closed once: the second close changes nothing

    client = MlflowClient(info.uri)
    run = client.get_run(tracker.run_id(trial))
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed"
    assert run.data.tags["error"] == ("ValueError: " + "x" * 6000)[:5000]  # MLflow's tag limit
    assert run.data.params["t2i_edit_ratio"] == "0.3" and run.data.params["steps"] == "4"
    assert run.data.metrics == {"step": 2.0, "score": 0.25}  # Ray's pid is not a metric
    recipe = client.download_artifacts(run.info.run_id, "recipe.yaml", str(tmp_path))
    assert Recipe.from_yaml(recipe) == Recipe(steps=4, t2i_edit_ratio=0.3)


def test_a_trial_stopped_early_is_a_finished_run_with_its_outcome(tmp_path):
    """ASHA stopping a trial is a normal outcome: FINISHED in MLflow (no red mark), outcome=stopped_early."""
    info = SweepInfo("exp", "sweep123", f"sqlite:///{tmp_path / 'm.db'}", "name: exp\n", {})
    tracker = MlflowTracker(info, {"steps": 4})
    tracker.setup()
    stopped, finished = (Trial("noop", config={}, trial_id=t, stub=True) for t in ("stop0001", "done0001"))
    for trial, last in ((stopped, {"step": 2.0, "score": 0.2}), (finished, {"step": 4.0, "score": 0.3, "final": 1.0})):
        tracker.on_trial_start(0, [], trial)
        tracker.on_trial_result(0, [], trial, last)
        trial.run_metadata.last_result = dict(last)
        tracker.on_trial_complete(0, [], trial)
    client = MlflowClient(info.uri)
    runs = {trial.trial_id: client.get_run(tracker.run_id(trial)) for trial in (stopped, finished)}
    assert runs["stop0001"].info.status == "FINISHED" and runs["stop0001"].data.tags["outcome"] == "stopped_early"
    assert runs["done0001"].info.status == "FINISHED" and runs["done0001"].data.tags["outcome"] == "finished"
    assert {run.data.tags["stage"] for run in runs.values()} == {"search"}


def test_confirmation_runs_are_tagged_and_leave_the_search_runs_alone(tmp_path):
    """The confirmation stage's tracker tags its runs stage=confirm and confirm_of=<trial>; its end
    (which trashes runs its Tune experiment does not know) never touches the search's runs."""
    info = SweepInfo("exp", "sweep123", f"sqlite:///{tmp_path / 'm.db'}", "name: exp\n", {})
    search, confirm = MlflowTracker(info, {"steps": 4}), MlflowTracker(info, {"steps": 4}, stage="confirm")
    searched = Trial("noop", config={"t2i_edit_ratio": 0.3}, trial_id="srch0001", stub=True)
    again = Trial("noop", config={"t2i_edit_ratio": 0.3, "seed": 1, "confirm_of": "srch0001"}, trial_id="conf0001",
                  stub=True)
    for tracker, trial in ((search, searched), (confirm, again)):
        tracker.setup()
        tracker.on_trial_start(0, [trial], trial)
        trial.run_metadata.last_result = {"step": 4.0, "final": 1.0}
        tracker.on_trial_complete(0, [trial], trial)
        trial.set_status(Trial.TERMINATED)
        tracker.on_experiment_end([trial])
    client = MlflowClient(info.uri)
    runs = {r.data.tags["trial_id"]: r for r in client.search_runs([search.experiment_id], "tags.role = 'trial'")}
    assert set(runs) == {"srch0001", "conf0001"}  # neither stage's end trashed the other's run
    assert runs["conf0001"].data.tags["stage"] == "confirm" and runs["conf0001"].data.tags["confirm_of"] == "srch0001"
    assert runs["conf0001"].data.params["seed"] == "1" and "confirm_of" not in runs["conf0001"].data.params
    assert runs["srch0001"].data.tags["stage"] == "search"
    assert pickle.loads(pickle.dumps(confirm)).stage == "confirm"


def test_a_hook_that_fails_says_so_and_never_raises(tmp_path, capsys):
    """An exception in a Tune callback would end the sweep: the tracker shows it and goes on."""
    info = SweepInfo("exp", "sweep123", f"sqlite:///{tmp_path / 'm.db'}", "name: exp\n", {})
    tracker = MlflowTracker(info, {"steps": 4})
    broken = Trial("noop", config={"no_such_field": 1}, trial_id="oops0001", stub=True)
    tracker.on_trial_start(0, [broken], broken)  # the recipe cannot be built from that config
    out = capsys.readouterr()
    assert "MLflow tracking failed in on_trial_start: " in out.out
    assert "Traceback" in out.err  # no run dir, no driver.log: the traceback goes to stderr
