"""The MLflow outbox (orchestrator/tracking/outbox.py): journaled, delivered in order, kept while the store is away.

Run: .venv/bin/python -m pytest tests/test_outbox.py -q
No MLflow store: `deliver` is a test function that records, refuses or rejects.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from orchestrator.rundir import RunDir
from orchestrator.tracking import outbox


def _refused(entry):
    raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")


def test_journal_survives_a_restart_and_replays_in_order(tmp_path):
    run = RunDir(tmp_path)
    grid = tmp_path / "samples.png"
    grid.write_bytes(b"png")
    away = outbox.Outbox(run, _refused, store=f"test://{tmp_path}/a")
    for step in (2, 4):
        away.put({"op": "report", "trial": "t1", "step": step})
    away.put({"op": "trial_end", "trial": "t1"}, files=[grid])
    assert away.flush() == 0 and len(away.pending()) == 3
    grid.unlink()  # Tune pruned the checkpoint: the outbox kept its own copy
    with run.journal.open("a") as out:
        out.write('{"op": "report", "tri')  # a driver killed mid-append

    delivered = []

    def deliver(entry):
        delivered.append((entry["op"], entry.get("step"), [Path(f).read_bytes() for f in entry["files"]]))

    restarted = outbox.Outbox(run, deliver, store=f"test://{tmp_path}/b")  # a new process: read from disk
    restarted.put({"op": "sweep_end"})
    assert restarted.flush() == 4
    assert delivered == [("report", 2, []), ("report", 4, []), ("trial_end", None, [b"png"]), ("sweep_end", None, [])]
    assert not run.journal.exists() and not run.outbox_files.exists()  # nothing pending, nothing left over
    assert restarted.flush() == 0 and len(delivered) == 4


def test_writes_are_kept_while_the_store_is_away_and_rejected_ones_dropped(tmp_path, capsys):
    from mlflow.exceptions import MlflowException, RestException

    store = f"test://{tmp_path}"
    state = {"away": True, "delivered": []}

    def deliver(entry):
        if state["away"]:
            raise MlflowException("API request failed") from requests.exceptions.ConnectionError("refused")
        if entry["op"] == "bad":
            raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "no such key"})
        state["delivered"].append(entry["op"])

    run = RunDir(tmp_path)
    box = outbox.Outbox(run, deliver, store=store)
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
    assert "Traceback" in run.driver_log.read_text()


def test_an_away_store_is_tried_again_only_after_retry_s_unless_forced(tmp_path, monkeypatch):
    calls = []

    def deliver(entry):
        calls.append(entry["op"])
        raise ConnectionError("refused")

    clock = {"now": 1000.0}
    monkeypatch.setattr(outbox.time, "monotonic", lambda: clock["now"])
    failures = []
    box = outbox.Outbox(None, deliver, store=f"test://{tmp_path}", on_failure=lambda: failures.append(1))
    box.put({"op": "a"})
    assert box.flush() == 0 and calls == ["a"] and box.away and failures == [1]
    assert box.flush() == 0 and calls == ["a"]  # within RETRY_S: not even tried
    assert box.query(lambda: "answer", "default") == "default"  # reads are not tried either
    assert box.flush(force=True) == 0 and calls == ["a", "a"]
    clock["now"] += outbox.RETRY_S + 1
    assert box.flush() == 0 and calls == ["a", "a", "a"] and len(failures) == 3


def test_an_outbox_without_a_run_folder_keeps_its_entries_in_memory(tmp_path):
    grid = tmp_path / "g.png"
    grid.write_bytes(b"png")
    delivered = []
    box = outbox.Outbox(None, lambda entry: delivered.append(entry), store=f"test://{tmp_path}")
    box.put({"op": "trial_end", "trial": "t1"}, files=[grid])
    assert [e["files"] for e in box.pending()] == [[str(grid.resolve())]]
    assert box.flush() == 1 and delivered[0]["files"] == [str(grid.resolve())]
    assert box.pending() == [] and sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]


def test_http_policy_shortens_mlflow_retries_and_restores_the_environment(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own setting
    with outbox.http_policy(away=False):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # a user's own setting wins
    with outbox.http_policy(away=True):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "5"  # away: one quick attempt
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


def test_read_journal_skips_torn_and_foreign_lines(tmp_path):
    path = tmp_path / "journal.jsonl"
    assert outbox.read_journal(path) == []
    path.write_text('{"op": "a"}\n[1, 2]\n{"no_op": 1}\n{"op": "b"}\n{"op": "c", "tri')
    assert [e["op"] for e in outbox.read_journal(path)] == ["a", "b"]


@pytest.mark.parametrize(
    "entry, words",
    [({"op": "report", "trial": "ab12", "step": 4}, "report (trial ab12, step 4)"),
     ({"op": "sweep_end", "known": []}, "sweep_end"), ({}, "?")],
)
def test_describe_names_an_entry_in_words(entry, words):
    assert outbox.describe(entry) == words
