"""The line a sweep ends with while MLflow writes are still pending (orchestrator/tracking/pending.py).

Run: .venv/bin/python -m pytest tests/test_tracking_pending.py -q
"""

from __future__ import annotations

from orchestrator.rundir import RunDir
from orchestrator.tracking.outbox import Outbox
from orchestrator.tracking.pending import pending_note


def _refused(entry):
    raise ConnectionRefusedError(111, "Connection refused")


def test_nothing_pending_says_nothing(tmp_path):
    assert pending_note(tmp_path) is None
    RunDir(tmp_path).journal.write_text("")  # an empty journal is as good as none
    assert pending_note(tmp_path) is None


def test_pending_writes_are_counted_by_kind_with_their_trials(tmp_path, capsys):
    run = RunDir(tmp_path)
    box = Outbox(run, _refused, store=f"test://{tmp_path}")
    for entry in ({"op": "report", "trial": "bbbb0002", "step": 2}, {"op": "report", "trial": "aaaa0001", "step": 2},
                  {"op": "trial_end", "trial": "aaaa0001"}, {"op": "sweep_end"}, {"op": "outputs"}, {"op": "custom"}):
        box.put(entry)
    assert pending_note(tmp_path) == (
        f"6 MLflow writes pending in {run.journal} (metric reports: 2, "
        "trial runs closed (outcome, recipe.yaml, samples.png): 1, sweep run ended: 1, table uploads: 1, "
        "custom: 1; trials aaaa0001, bbbb0002)"
    )
