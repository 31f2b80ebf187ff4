"""Delivering the tracker's writes to MLflow (orchestrator/tracking/writer.py): once, and idempotently.

Run: .venv/bin/python -m pytest tests/test_tracking_writer.py -q
A sqlite store in a tmp folder; trials are Tune stubs. A replayed journal (answers lost, a driver
killed before it rewrote the journal) must change nothing the second time.
"""

from __future__ import annotations

import dataclasses

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from orchestrator.rundir import RunDir
from orchestrator.tracking import outbox
from orchestrator.tracking.callback import MlflowTracker
from orchestrator.tracking.pending import pending_note
from orchestrator.tracking.writer import MlflowWriter, SweepInfo


def _sweep_info(tmp_path, uri: str) -> SweepInfo:
    run_dir = tmp_path / "runs" / "exp"
    run_dir.mkdir(parents=True, exist_ok=True)
    return SweepInfo("exp", "sweep123", uri, "name: exp\n", {"run_dir": str(run_dir)})


def _drive(tracker: MlflowTracker, trials: list) -> None:
    """What Tune calls for two trials that each report steps 2 and 4 and finish, then the tables."""
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

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # nothing listens: no back-off to wait for
    away = _sweep_info(tmp_path, f"http://127.0.0.1:{free_port()}")
    trials = [Trial("noop", config={}, trial_id=t, stub=True) for t in ("aaaa0001", "bbbb0002")]
    tracker = MlflowTracker(away, {"steps": 4})
    _drive(tracker, trials)
    table = tmp_path / "tables.parquet"
    table.write_bytes(b"PAR1")
    tracker.log_outputs([table])
    table.unlink()  # the kept copy is what gets uploaded
    assert tracker.all_run_ids() == {} and tracker.experiment_id == ""
    journal = away.run_dir.journal
    kept = journal.read_text()
    ops = [e["op"] for e in outbox.read_journal(journal)]
    assert ops == ["sweep_start"] + ["trial_start", "report", "report", "trial_end"] * 2 + ["sweep_end", "outputs"]
    shown = capsys.readouterr().out
    assert shown.count(" is away (") == 1 and "Connection refused" in shown, shown
    assert pending_note(away.run_dir.path).startswith(f"11 MLflow writes pending in {journal} (")

    back = dataclasses.replace(away, uri=f"sqlite:///{tmp_path / 'm.db'}")  # the same writes, a store that answers
    staged = {p.name: p.read_bytes() for p in away.run_dir.outbox_files.rglob("*") if p.is_file()}
    for attempt in range(2):
        replayer = MlflowTracker(back, {"steps": 4})
        assert set(replayer.all_run_ids()) == {"aaaa0001", "bbbb0002"}
        assert not journal.exists() and pending_note(away.run_dir.path) is None
        if attempt == 0:  # as if every answer had been lost: the whole journal once more
            journal.write_text(kept)
            for name, data in staged.items():
                entry = next(e for e in outbox.read_journal(journal) if e["files"] and e["files"][0].endswith(name))
                (away.run_dir.path / entry["files"][0]).parent.mkdir(parents=True, exist_ok=True)
                (away.run_dir.path / entry["files"][0]).write_bytes(data)

    client = MlflowClient(back.uri)
    experiment = client.get_experiment_by_name("exp")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags["role"] == "sweep"]
    children = [r for r in runs if r.data.tags["role"] == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "tables.parquet" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert sorted(r.data.tags["trial_id"] for r in children) == ["aaaa0001", "bbbb0002"]
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "finished"
        assert run.data.params["steps"] == "4"
        for key in ("score", "step"):
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == [2, 4], key
        assert "recipe.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_each_entry_delivered_twice_changes_nothing_the_second_time(tmp_path):
    view = {"searchFilter": "tags.sweep_id = 'sweep123'"}
    info = dataclasses.replace(_sweep_info(tmp_path, f"sqlite:///{tmp_path / 'm.db'}"), view=view)
    writer = MlflowWriter(info)
    entries = [
        {"op": "sweep_start", "at": 1000},
        {"op": "trial_start", "trial": "t1", "params": {"steps": "4"}, "running": True, "at": 1001},
        {"op": "report", "trial": "t1", "step": 2.0, "metrics": {"step": 2.0, "score": 0.2}, "at": 1002},
        {"op": "report", "trial": "t1", "step": 4.0, "metrics": {"step": 4.0, "score": 0.4}, "at": 1003},
        {"op": "trial_end", "trial": "t1", "outcome": "FINISHED", "status": "FINISHED", "error": None,
         "recipe": "steps: 4\n", "files": [], "at": 1004},
        {"op": "sweep_end", "known": ["t1"], "touched": ["t1"], "at": 1005},
    ]
    for entry in entries + entries:
        writer.deliver(entry)
    writer.forget()  # as after a failed write: logged steps are asked from the store again
    writer.deliver(entries[2])

    client = MlflowClient(info.uri)
    experiment = client.get_experiment_by_name("exp")
    assert experiment.tags["mlflow.sharedViewState.trials"] == '{"searchFilter": "tags.sweep_id = \'sweep123\'"}'
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["role"] for r in runs) == ["sweep", "trial"]
    child = next(r for r in runs if r.data.tags["role"] == "trial")
    assert child.info.run_name == RunDir.trial_dirname("t1") and child.data.params == {"steps": "4"}
    assert [(m.step, m.value) for m in client.get_metric_history(child.info.run_id, "score")] == [(2, 0.2), (4, 0.4)]
    assert child.info.status == "FINISHED" and child.data.tags["outcome"] == "FINISHED"
    assert writer.all_run_ids() == {"t1": child.info.run_id} and writer.child("t1") == child.info.run_id
    parent = client.get_run(writer.parent())
    assert parent.info.status == "FINISHED" and parent.info.run_name == "exp"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {RunDir.SPEC_FILE}


def test_an_entry_for_a_trial_the_store_never_saw_is_an_error(tmp_path):
    writer = MlflowWriter(_sweep_info(tmp_path, f"sqlite:///{tmp_path / 'm.db'}"))
    writer.deliver({"op": "sweep_start", "at": 1000})
    with pytest.raises(LookupError, match="^no MLflow run for trial nope of sweep sweep123$"):
        writer.deliver({"op": "report", "trial": "nope", "step": 2.0, "metrics": {}, "at": 1001})
