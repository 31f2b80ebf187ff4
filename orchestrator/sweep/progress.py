"""The sweep's console: one short line per trial event (start, report, end) instead of Ray's tables.

    ProgressLines(spec)          # a ray.tune.Callback, beside the MLflow tracker

    18:02:11 trial 68a54396  started (1/4)  t2i_edit_ratio=0.3
    18:02:15 trial 68a54396  step     2  t2i_score=0.412  edit_score=0.388  score=0.400
    18:02:19 trial 68a54396  FINISHED
"""

from __future__ import annotations

import time
from typing import Any

from ray import tune
from rich.console import Console

from orchestrator.ray_status import trial_error, trial_outcome
from orchestrator.search import recipe_params
from orchestrator.spec import SweepSpec
from orchestrator.summary import shown_metrics


def cell(value: Any) -> str:
    """A value in a line or table cell: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class ProgressLines(tune.Callback):
    """One short line per trial event (start, report, end) instead of Ray's status tables."""

    def __init__(self, spec: SweepSpec, total: int | None = None):
        self.metrics = shown_metrics(spec)
        self.total = total or spec.budget.trials
        self._console: Console | None = None
        self._started: set[str] | None = None  # ids of the trials started so far

    def __getstate__(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "total": self.total, "_console": None, "_started": None}

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(highlight=False, soft_wrap=True)
        return self._console

    def _line(self, trial: Any, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} trial {trial.trial_id}  {text}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = ", ".join(f"{k}={cell(v)}" for k, v in recipe_params(trial.config).items())
        # Counted here, not from the trials' statuses: when Tune updates those relative to its
        # callbacks is its own business. A resumed sweep counts the trials that ended before.
        if self._started is None:
            self._started = {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        self._started.add(trial.trial_id)
        self._line(trial, f"started ({len(self._started)}/{self.total})  {params}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        shown = "  ".join(f"{m}={result[m]:.3f}" for m in self.metrics if m in result)
        self._line(trial, f"step {int(result.get('step', 0)):>5}  {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, trial_outcome(trial, completed=True))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, f"retrying: {trial_error(trial)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, f"FAILED: {trial_error(trial)}")
