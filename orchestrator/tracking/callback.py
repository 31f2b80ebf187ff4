"""The sweep's MLflow tracker: a Tune callback of the driver turning trial events into outbox entries.

    tracker = MlflowTracker(SweepInfo(...), base=spec.base)   # a ray.tune.Callback
    Tuner(..., run_config=RunConfig(callbacks=[tracker]))

Every write is an entry of the sweep's outbox (orchestrator/tracking/outbox.py), delivered by
`MlflowWriter`; entries name trials by their Tune id, not by MLflow run id, so a run the store never
saw (created while it was away) is created when the entry is delivered. Reads (`experiment_id`,
`all_run_ids`, ...) deliver what is pending first; while the store is away they answer '' or {}.

The callback is pickled by Ray into the experiment folder (tuner.pkl) and unpickled on resume, so
it holds plain data only; the outbox and the MLflow client are made on first use.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator.ray_status import report_metrics, trial_error, trial_outcome
from orchestrator.rundir import RunDir
from orchestrator.search import CONFIRM_KEY, is_raw_key, trial_recipe
from orchestrator.tracking import outbox
from orchestrator.tracking.writer import MlflowWriter, SweepInfo


def trial_params(base: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """MLflow params of a trial: the flattened recipe (`category_mix.text`, ...) plus raw simplex draws."""
    recipe = trial_recipe(base, config)
    params = {key: str(value) for key, value in recipe.to_flat_dict().items()}
    params |= {f"optuna.{key}": str(value) for key, value in config.items() if is_raw_key(key)}
    return params


# Stopping early is a normal outcome of a sweep (ASHA's), not a failure: such a run is FINISHED in
# MLflow and its `outcome` tag says how it ended.
_MLFLOW_STATUS = {"FINISHED": "FINISHED", "STOPPED": "FINISHED", "FAILED": "FAILED"}
OUTCOME_TAGS = {"FINISHED": "finished", "STOPPED": "stopped_early", "FAILED": "failed"}
"""The `outcome` tag of a trial's run, by the sweep's outcome (results.load_mlflow reads it back)."""
STAGES = ("search", "confirm")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _guarded(hook: Callable[..., None]) -> Callable[..., None]:
    """A Tune hook that never raises: an exception in a callback would end the whole sweep."""

    @functools.wraps(hook)
    def wrapper(self: MlflowTracker, *args: Any, **kwargs: Any) -> None:
        try:
            hook(self, *args, **kwargs)
        except Exception as exc:
            self.box.error(f"MLflow tracking failed in {hook.__name__}", exc)

    return wrapper


class MlflowTracker(Callback):
    """Driver-side Tune callback writing the sweep's parent run and one child run per trial (see the
    module docstring); `base` is the spec's base recipe, which the trials' sampled params complete.
    `stage`: the trials' `stage` tag ("search", or "confirm" for the confirmation stage's runs)."""

    def __init__(self, sweep: SweepInfo, base: dict[str, Any], stage: str = "search"):
        if stage not in STAGES:
            raise ValueError(f"expected a stage in {STAGES}, found {stage!r}")
        self.sweep, self.base, self.stage = sweep, dict(base), stage
        self._writer: MlflowWriter | None = None
        self._outbox: outbox.Outbox | None = None
        self._started: set[str] = set()  # trials whose run this session made sure of
        self._closed: dict[str, str] = {}  # trial id -> the MLflow status its close was kept with

    def __getstate__(self) -> dict[str, Any]:
        # Pickled by Ray into the experiment folder: plain data only, re-attached in setup().
        return {"sweep": self.sweep, "base": self.base, "stage": self.stage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sweep"], state["base"], state.get("stage", "search"))

    @property
    def box(self) -> outbox.Outbox:
        """The outbox (and the writer behind it), made on first use."""
        if self._outbox is None:
            self._writer = writer = MlflowWriter(self.sweep)
            self._outbox = outbox.Outbox(
                self.sweep.run_dir, writer.deliver, store=self.sweep.uri, on_failure=writer.forget
            )
        return self._outbox

    def _write(self, entry: dict[str, Any], files: list[Path] | tuple = (), force: bool = False) -> None:
        """Keep one write in the outbox, then deliver whatever is pending (never raises)."""
        entry = {**entry, "at": _now_ms()}
        try:
            self.box.put(entry, files)
        except Exception as exc:  # the run dir's disk: the write cannot even be kept
            self.box.error(f"could not keep an MLflow write ({outbox.describe(entry)})", exc)
        self.box.flush(force=force)

    # -- what the rest of the sweep reads (pending writes delivered first) --------------------------

    @property
    def experiment_id(self) -> str:
        """The sweep's MLflow experiment."""
        self.box.flush()
        return self.box.query(lambda: self._writer.experiment_id(create=False), "")

    @property
    def parent_id(self) -> str:
        self.box.flush()
        return self.box.query(lambda: self._writer.parent(), "")

    def run_id(self, trial: Trial) -> str:
        """The trial's child run."""
        self.box.flush()
        return self.box.query(lambda: self._writer.child(trial.trial_id), "")

    def all_run_ids(self) -> dict[str, str]:
        """trial id -> run id for every child run of this sweep in MLflow."""
        self.box.flush()
        return self.box.query(lambda: self._writer.all_run_ids(), {})

    def log_outputs(self, paths: list[Path]) -> None:
        """The sweep's tables (RunDir.tables) as artifacts of the parent run."""
        self._write({"op": "outputs"}, [path for path in paths if path.is_file()], force=True)

    # -- Tune hooks ---------------------------------------------------------------------------------

    @_guarded
    def setup(self, **info: Any) -> None:
        """Called by Tune as the sweep starts: the parent run, created or RUNNING again on resume
        (and whatever an earlier driver could not deliver, first)."""
        self._write({"op": "sweep_start"})

    def _start(self, trial: Trial, running: bool = False) -> None:
        """The trial's run found or created (with its params); `running`: RUNNING again if it was closed."""
        if trial.trial_id in self._started and not running:
            return
        self._started.add(trial.trial_id)
        self._closed.pop(trial.trial_id, None)
        params = trial_params(self.base, trial.config)
        tags = {"stage": self.stage}
        if CONFIRM_KEY in trial.config:
            tags[CONFIRM_KEY] = str(trial.config[CONFIRM_KEY])
        self._write({"op": "trial_start", "trial": trial.trial_id, "params": params, "running": running, "tags": tags})

    @_guarded
    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._start(trial, running=True)

    @_guarded
    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        self._start(trial)
        metrics = report_metrics(result)
        step = metrics.get("step", float(result.get("training_iteration", 0)))
        self._write({"op": "report", "trial": trial.trial_id, "step": step, "metrics": metrics})

    @_guarded
    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._close(trial, completed=True)

    @_guarded
    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._close(trial)

    @_guarded
    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Every trial's run in its final state, stale RUNNING runs closed, lost ones trashed, the parent FINISHED."""
        for trial in trials:
            if trial.status in (Trial.TERMINATED, Trial.ERROR):
                self._close(trial)
        known = sorted(t.trial_id for t in trials)
        self._write({"op": "sweep_end", "known": known, "touched": sorted(self._started), "stage": self.stage},
                    force=True)

    def _close(self, trial: Trial, completed: bool = False) -> None:
        """Outcome and error tags, recipe.yaml, the final samples.png, the run's final status."""
        outcome = trial_outcome(trial, completed)
        status = _MLFLOW_STATUS.get(outcome, "KILLED")
        if self._closed.get(trial.trial_id) == status:
            return  # closed before (e.g. on_trial_error, then on_experiment_end)
        self._start(trial)
        error = trial_error(trial)[:5000] if outcome == "FAILED" else None
        recipe = trial_recipe(self.base, trial.config).to_yaml()
        entry = {"op": "trial_end", "trial": trial.trial_id, "outcome": OUTCOME_TAGS.get(outcome, outcome), "status": status,
                 "error": error, "recipe": recipe}
        with _samples(trial) as files:  # copied into the outbox: Tune prunes old checkpoints
            self._write(entry, files)
        self._closed[trial.trial_id] = status


@contextmanager
def _samples(trial: Trial) -> Iterator[list[Path]]:
    """The final sample grid, from the trial's last checkpoint (on the sweep's storage), if any."""
    checkpoint = trial.checkpoint
    if checkpoint is None:
        yield []
        return
    with checkpoint.as_directory() as folder:
        grid = RunDir.samples_in(folder)
        yield [grid] if grid.is_file() else []
