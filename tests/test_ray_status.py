"""A trial's outcome, error line and metrics as the sweep reports them (orchestrator/ray_status.py).

Run: .venv/bin/python -m pytest tests/test_ray_status.py -q
Trials are stand-ins with the attributes Tune's `Trial` has: no Ray.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.ray_status import RAY_KEYS, error_summary, report_metrics, trial_error, trial_outcome


def test_error_summary_keeps_the_last_exception_line():
    trace = (
        "Traceback (most recent call last):\n  File \"x.py\", line 3, in f\n    raise X\n"
        "ray.exceptions.RayTaskError(TrialDivergedError): ray::run_trial()\n"
        "orchestrator.trial.TrialDivergedError: training diverged at generator step 1: loss is not finite\n"
    )
    assert error_summary(trace) == "TrialDivergedError: training diverged at generator step 1: loss is not finite"
    assert error_summary("KeyboardInterrupt: \nno error line here\n") == "no error line here"
    assert error_summary("  \n") == "" and error_summary(None) == ""


def test_report_metrics_drop_ray_bookkeeping_and_non_numbers():
    result = {"score": 0.5, "step": 20, "time_this_iter_s": 1.0, "trial_id": "abc", "done": False,
              "config": {"a": 1}, "fd": float("nan"), "inf": float("inf"), "final": True, "note": "x"}
    assert report_metrics(result) == {"score": 0.5, "step": 20.0}
    assert isinstance(report_metrics(result)["step"], float)
    assert {"training_iteration", "time_total_s", "pid"} <= RAY_KEYS


def _trial(status: str, last_result: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(status=status, last_result=last_result)


@pytest.mark.parametrize(
    "status, last, completed, outcome",
    [
        ("ERROR", {"final": 1.0}, False, "FAILED"),
        ("TERMINATED", {"final": 1.0}, False, "FINISHED"),
        ("TERMINATED", {"step": 2.0}, False, "STOPPED"),  # stopped early by ASHA: no final report
        ("TERMINATED", None, False, "STOPPED"),
        ("RUNNING", {"final": 1.0}, True, "FINISHED"),  # on_trial_complete: not TERMINATED yet
        ("RUNNING", {"step": 2.0}, False, "RUNNING"),
        ("PENDING", None, False, "PENDING"),
    ],
)
def test_trial_outcome(status, last, completed, outcome):
    assert trial_outcome(_trial(status, last), completed=completed) == outcome


def test_trial_error_reads_the_local_error_file_first(tmp_path):
    local = tmp_path / "error.txt"
    local.write_text("Traceback ...\nValueError: mixed_precision='fp16' is not supported\n")
    synced = SimpleNamespace(error_file=str(local), get_error=lambda: "RuntimeError: the storage copy")
    assert trial_error(synced) == "ValueError: mixed_precision='fp16' is not supported"
    not_yet = SimpleNamespace(error_file=str(tmp_path / "missing.txt"), get_error=lambda: "OSError: from storage")
    assert trial_error(not_yet) == "OSError: from storage"
    none = SimpleNamespace(error_file=None, get_error=lambda: None)
    assert trial_error(none) == ""


def test_importing_it_imports_no_ray():
    """promote reads metrics through it: Ray stays out of that process (seconds of import)."""
    import subprocess
    import sys

    code = "import sys, orchestrator.ray_status; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
