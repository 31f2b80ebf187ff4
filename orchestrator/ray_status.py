"""What Ray Tune says about a trial, in the sweep's words: its outcome, its last error, its metrics.

    trial_outcome(trial)          # FINISHED, STOPPED, FAILED (or Ray's status while it runs)
    trial_error(trial)            # "TrialDivergedError: training diverged at generator step 3: ..."
    report_metrics(result)        # a Tune result without Ray's bookkeeping

The progress lines, the MLflow tracker and the trials table all use these, so a trial has one
outcome and one error line everywhere. Trials are read by their attributes only, so this module
imports no Ray (promote uses `report_metrics`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

# Keys Ray adds to every result; they are bookkeeping, not metrics of the recipe.
RAY_KEYS = frozenset(
    {
        "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "time_since_restore",
        "iterations_since_restore", "timesteps_total", "episodes_total", "timesteps_since_restore",
        "done", "pid", "date", "hostname", "node_ip", "trial_id", "experiment_tag", "config",
        "checkpoint_dir_name", "should_checkpoint",
    }
)


def report_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The recipe's metrics in a Tune result: numeric, finite, not Ray's own bookkeeping."""
    return {
        key: float(value)
        for key, value in result.items()
        if key not in RAY_KEYS
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def error_summary(trace: str | None) -> str:
    """The last `SomeError: message` line of a traceback text, module path stripped."""
    if not trace:
        return ""
    lines = [line.strip() for line in str(trace).splitlines() if line.strip()]
    pattern = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception|Interrupt)\w*): (.*)$")
    for line in reversed(lines):
        match = pattern.match(line)
        if match:
            return f"{match.group(1)}: {match.group(2)}"
    return lines[-1] if lines else ""


def trial_error(trial: Trial) -> str:
    """The last error line of a trial, as soon as Tune has recorded the error.

    `Trial.get_error()` reads the copy on the experiment's storage, which Tune syncs from the
    trial's local folder a moment later: read from a callback it can still miss the error. The local
    error file is written before the callbacks run, so it is read first.
    """
    local = trial.error_file
    if local and Path(local).is_file():
        return error_summary(Path(local).read_text(errors="replace"))
    return error_summary(trial.get_error())


def trial_outcome(trial: Trial, completed: bool = False) -> str:
    """FINISHED (ran to the end), STOPPED (stopped early by the scheduler), FAILED, or Ray's status.

    `completed`: called from `on_trial_complete`, before Ray marks the trial TERMINATED.
    """
    if trial.status == "ERROR":  # Ray's Trial.ERROR
        return "FAILED"
    if trial.status == "TERMINATED" or completed:  # Trial.TERMINATED
        return "FINISHED" if (trial.last_result or {}).get("final") else "STOPPED"
    return trial.status
