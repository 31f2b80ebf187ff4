"""The finish gate of fault-injection runs (orchestrator/gate.py): trials wait, passes let one through each.

Run: .venv/bin/python -m pytest tests/test_gate.py -q
Trials are threads here; in the sweeps they are Ray worker processes sharing the gate folder.
"""

from __future__ import annotations

import threading

import pytest

from orchestrator import gate


def _waiter(trial_id: str) -> threading.Thread:
    thread = threading.Thread(target=gate.wait_to_finish, args=(trial_id,), daemon=True)
    thread.start()
    return thread


def test_without_the_variable_there_is_no_gate(monkeypatch, tmp_path):
    monkeypatch.delenv(gate.ENV, raising=False)
    gate.wait_to_finish("t1")  # returns at once
    assert list(tmp_path.iterdir()) == []


def test_each_pass_lets_exactly_one_trial_through_and_open_lets_all(monkeypatch, tmp_path):
    folder = tmp_path / "gate"
    monkeypatch.setenv(gate.ENV, str(folder))
    threads = {t: _waiter(t) for t in ("a", "b", "c")}
    assert gate.wait_until(lambda: gate.waiting(folder) == {"a", "b", "c"}, "three trials at the gate", hang_s=30)
    assert gate.passed(folder) == set() and all(t.is_alive() for t in threads.values())

    gate.let_through(folder, 2)
    assert gate.wait_until(lambda: len(gate.passed(folder)) == 2, "two passes taken", hang_s=30)
    (held,) = {"a", "b", "c"} - gate.passed(folder)
    for trial_id, thread in threads.items():
        thread.join(timeout=0 if trial_id == held else 30)
        assert thread.is_alive() == (trial_id == held)
    assert not list(folder.glob("pass-*"))  # every pass taken once

    gate.open_gate(folder)
    threads[held].join(timeout=30)
    assert not threads[held].is_alive()
    late = _waiter("d")  # once open, later trials go straight through
    late.join(timeout=30)
    assert not late.is_alive() and gate.waiting(folder) == {"a", "b", "c", "d"}


def test_wait_until_waits_for_a_state_or_for_the_end_of_what_it_watches():
    ticks = iter(range(100))
    assert gate.wait_until(lambda: next(ticks) >= 3, "three ticks") is True
    assert gate.wait_until(lambda: False, "never", alive=lambda: False) is False  # the watched process ended
    with pytest.raises(TimeoutError, match="^no never after 0 s$"):
        gate.wait_until(lambda: False, "never", hang_s=0.1)
