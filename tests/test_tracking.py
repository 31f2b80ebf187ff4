"""Fast checks of the pieces the sweep engine is built from (no Ray cluster, no training).

Run: .venv/bin/python -m pytest tests/test_tracking.py -q
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import polars as pl
import pytest
import requests
from mlflow.tracking import MlflowClient
from sweep_helpers import micro_spec

from orchestrator import outbox, results, space, tracking
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
    assert copy._outbox is None and copy._writer is None
    copy.setup()
    assert copy.parent_id == tracker.parent_id
    runs = MlflowClient(info.uri).search_runs([copy.experiment_id])
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
    live = client.search_runs([resumed.experiment_id], "tags.role = 'trial'")
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


# -- the MLflow outbox (orchestrator/outbox.py) -----------------------------------------------------


def _refused(entry):
    raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")


def test_outbox_journal_survives_a_restart_and_replays_in_order(tmp_path):
    journal = tmp_path / outbox.JOURNAL
    grid = tmp_path / "samples.png"
    grid.write_bytes(b"png")
    away = outbox.Outbox(journal, _refused, store=f"test://{tmp_path}/a")
    for step in (2, 4):
        away.put({"op": "report", "trial": "t1", "step": step})
    away.put({"op": "trial_end", "trial": "t1"}, files=[grid])
    assert away.flush() == 0 and len(away.pending()) == 3
    grid.unlink()  # Tune pruned the checkpoint: the outbox kept its own copy
    with journal.open("a") as out:
        out.write('{"op": "report", "tri')  # a driver killed mid-append

    delivered = []

    def deliver(entry):
        delivered.append((entry["op"], entry.get("step"), [Path(f).read_bytes() for f in entry["files"]]))

    restarted = outbox.Outbox(journal, deliver, store=f"test://{tmp_path}/b")  # a new process: read from disk
    restarted.put({"op": "sweep_end"})
    assert restarted.flush() == 4
    assert delivered == [("report", 2, []), ("report", 4, []), ("trial_end", None, [b"png"]), ("sweep_end", None, [])]
    assert not journal.exists() and not (tmp_path / outbox.STAGING).exists()  # nothing pending, nothing left over
    assert restarted.flush() == 0 and len(delivered) == 4


def test_outbox_keeps_writes_while_the_store_is_away_and_drops_rejected_ones(tmp_path, capsys):
    from mlflow.exceptions import MlflowException, RestException

    store = f"test://{tmp_path}"
    state = {"away": True, "delivered": []}

    def deliver(entry):
        if state["away"]:
            raise MlflowException("API request failed") from requests.exceptions.ConnectionError("refused")
        if entry["op"] == "bad":
            raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "no such key"})
        state["delivered"].append(entry["op"])

    box = outbox.Outbox(tmp_path / outbox.JOURNAL, deliver, store=store, log=tmp_path / "driver.log")
    for op in ("a", "bad", "b"):
        box.put({"op": op})
        box.flush()
    box.flush(force=True)
    assert [e["op"] for e in box.pending()] == ["a", "bad", "b"]
    state["away"] = False
    assert box.flush(force=True) == 3
    assert state["delivered"] == ["a", "b"] and box.pending() == []
    lines = capsys.readouterr().out.splitlines()
    assert sum(f"MLflow store {store} is away (MlflowException: API request failed)" in line for line in lines) == 1
    assert sum("is back after" in line and "3 kept writes delivered" in line for line in lines) == 1
    rejected = [line for line in lines if "rejected a write" in line]
    assert len(rejected) == 1 and "INVALID_PARAMETER_VALUE: no such key" in rejected[0]
    assert "Traceback" in (tmp_path / "driver.log").read_text()

    assert outbox.is_unreachable(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "503"}))
    assert not outbox.is_unreachable(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "404"}))
    assert not outbox.is_unreachable(KeyError("a bug"))


def _sweep_info(tmp_path, uri: str) -> SweepInfo:
    run_dir = tmp_path / "runs" / "exp"
    run_dir.mkdir(parents=True, exist_ok=True)
    return SweepInfo("exp", "sweep123", uri, "name: exp\n", {"run_dir": str(run_dir)})


def _drive(tracker: MlflowTracker, trials: list) -> None:
    """What Tune calls for two trials that each report steps 2 and 4 and finish, then the tables."""
    from ray.tune.experiment import Trial

    tracker.setup()
    for trial in trials:
        tracker.on_trial_start(0, trials, trial)
        for step in (2.0, 4.0):
            tracker.on_trial_result(0, trials, trial, {"step": step, "score": step / 10, "time_this_iter_s": 1.0})
        trial.update_last_result({"step": 4.0, "final": True})
        tracker.on_trial_complete(0, trials, trial)
        trial.set_status(Trial.TERMINATED)
    tracker.on_experiment_end(trials)


def test_writes_kept_while_the_store_is_away_are_replayed_once_and_idempotently(tmp_path, monkeypatch, capsys):
    """Every write made while the store is unreachable is kept (the hooks never raise), then delivered
    once, runs created on delivery; delivering the same journal again (answers lost, a driver killed
    before it rewrote the journal) duplicates nothing."""
    from mlflow_server import free_port
    from ray.tune.experiment import Trial

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # nothing listens: no back-off to wait for
    away = _sweep_info(tmp_path, f"http://127.0.0.1:{free_port()}")
    trials = [Trial("noop", config={}, trial_id=t, stub=True) for t in ("aaaa0001", "bbbb0002")]
    tracker = MlflowTracker(away, {"steps": 4})
    _drive(tracker, trials)
    table = tmp_path / "trials.parquet"
    table.write_bytes(b"PAR1")
    tracker.log_outputs([table])
    table.unlink()  # the kept copy is what gets uploaded
    assert tracker.all_run_ids() == {} and tracker.experiment_id == ""
    journal = away.run_dir / outbox.JOURNAL
    kept = journal.read_text()
    ops = [e["op"] for e in outbox.read_journal(journal)]
    assert ops == ["sweep_start"] + ["trial_start", "report", "report", "trial_end"] * 2 + ["sweep_end", "outputs"]
    shown = capsys.readouterr().out
    assert shown.count(" is away (") == 1 and "Connection refused" in shown, shown
    assert tracking.pending_note(away.run_dir).startswith(f"11 MLflow writes pending in {journal} (")

    back = dataclasses.replace(away, uri=f"sqlite:///{tmp_path / 'm.db'}")  # the same writes, a store that answers
    staged = {p.name: p.read_bytes() for p in (away.run_dir / outbox.STAGING).rglob("*") if p.is_file()}
    for attempt in range(2):
        replayer = MlflowTracker(back, {"steps": 4})
        assert set(replayer.all_run_ids()) == {"aaaa0001", "bbbb0002"}
        assert not journal.exists() and tracking.pending_note(away.run_dir) is None
        if attempt == 0:  # as if every answer had been lost: the whole journal once more
            journal.write_text(kept)
            for name, data in staged.items():
                entry = next(e for e in outbox.read_journal(journal) if e["files"] and e["files"][0].endswith(name))
                (away.run_dir / entry["files"][0]).parent.mkdir(parents=True, exist_ok=True)
                (away.run_dir / entry["files"][0]).write_bytes(data)

    client = MlflowClient(back.uri)
    experiment = client.get_experiment_by_name("exp")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags["role"] == "sweep"]
    children = [r for r in runs if r.data.tags["role"] == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "trials.parquet" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert sorted(r.data.tags["trial_id"] for r in children) == ["aaaa0001", "bbbb0002"]
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "FINISHED"
        assert run.data.params["steps"] == "4"
        for key in ("score", "step"):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == [2, 4], key
        assert "recipe.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
