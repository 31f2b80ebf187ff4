"""The sweep's progress lines (orchestrator/sweep/progress.py), driven as Tune drives the callback.

Run: .venv/bin/python -m pytest tests/test_progress.py -q
"""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from orchestrator.sweep import progress
from orchestrator.sweep.progress import ProgressLines, cell


@pytest.fixture()
def lines(monkeypatch):
    monkeypatch.setattr(progress.time, "strftime", lambda fmt: "12:00:00")
    spec = SimpleNamespace(
        objectives=[SimpleNamespace(metric="t2i_score"), SimpleNamespace(metric="score")],
        budget=SimpleNamespace(trials=3),
    )
    return ProgressLines(spec)


def _trial(trial_id: str, status: str = "RUNNING", config: dict | None = None, **extra) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, status=status, config=config or {}, last_result=None, **extra)


def test_one_line_per_trial_event(lines, capsys, monkeypatch):
    a = _trial("aaaa0001", config={"t2i_edit_ratio": 0.30000000004, "category_mix.text": 1.0,
                                   "category_mix.raw.text": 0.7, "specialist": "text"})
    lines.on_trial_start(0, [a], a)
    lines.on_trial_result(0, [a], a, {"step": 2.0, "t2i_score": 0.41234, "score": 0.4, "edit_score": 0.3})
    a.last_result = {"final": 1.0}
    lines.on_trial_complete(0, [a], a)
    monkeypatch.setattr(progress, "trial_error", lambda trial: "ValueError: bad")
    lines.on_trial_recover(0, [a], a)
    lines.on_trial_error(0, [a], a)
    assert capsys.readouterr().out.splitlines() == [
        "12:00:00 trial aaaa0001  started (1/3)  t2i_edit_ratio=0.3, category_mix.text=1, specialist=text",
        "12:00:00 trial aaaa0001  step     2  t2i_score=0.412  score=0.400",  # objectives, then score, once
        "12:00:00 trial aaaa0001  FINISHED",
        "12:00:00 trial aaaa0001  retrying: ValueError: bad",
        "12:00:00 trial aaaa0001  FAILED: ValueError: bad",
    ]


def test_a_resumed_sweep_counts_the_trials_that_ended_before(lines, capsys):
    done = [_trial("old00001", "TERMINATED"), _trial("old00002", "ERROR"), _trial("wait0003", "PENDING")]
    new = _trial("new00004")
    lines.on_trial_start(0, [*done, new], new)
    lines.on_trial_start(0, [*done, new], new)  # a retried trial starts again: counted once
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[1] for line in out] == ["started (3/3)", "started (3/3)"]


def test_it_pickles_without_its_console_or_counts(lines, capsys):
    t = _trial("aaaa0001")
    lines.on_trial_start(0, [t], t)
    copy = pickle.loads(pickle.dumps(lines))  # Tune keeps callbacks in tuner.pkl
    assert copy._console is None and copy._started is None
    assert (copy.metrics, copy.total) == (["t2i_score", "score"], 3)


def test_cells_show_floats_to_three_digits():
    assert [cell(v) for v in (0.123456, 1e-4, 3, "text", None, True)] == ["0.123", "0.0001", "3", "text", "None", "True"]
