"""The kill soak on a small setting: driver + Ray SIGKILLed at random moments, resumed, nothing lost.

Run: .venv/bin/python -m pytest tests/test_kill_soak.py -q
The full soak is `python -m benchmarks.kill_soak --kills 10`. Whatever the moments the kills land on,
the invariants must hold; the worker kill is ordered by the finish gate.
"""

from __future__ import annotations

import pytest

from benchmarks.kill_soak import soak, worker_kill

pytestmark = pytest.mark.slow


def test_killed_and_resumed_sweep_loses_and_duplicates_nothing(tmp_path, micro_checkpoints):
    result = soak(tmp_path, micro_checkpoints, kills=2, trials=3, seed=1)
    assert result["kills"] == 2
    assert result["lost"] == 0 and result["duplicated"] == 0, result["problems"]


def test_killed_worker_resumes_its_trial_from_a_checkpoint(tmp_path, micro_checkpoints):
    result = worker_kill(tmp_path, micro_checkpoints)
    assert result["worker_kill_exit"] == 0 and result["worker_kill_status"] == ["FINISHED"]
    assert result["worker_killed_at_step"] == 6
    assert result["worker_resumed_first_report_step"] == 8  # resumed from the step-6 checkpoint
    assert result["worker_resumed_from_checkpoint"]
