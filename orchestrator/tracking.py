"""MLflow: one parent run per sweep, one child run per trial, written from the Ray driver only.

    tracker = MlflowTracker(SweepInfo(...), base=spec.base)   # a ray.tune.Callback
    Tuner(..., run_config=RunConfig(callbacks=[tracker]))

Why not Ray's `MLflowLoggerCallback`: on `Tuner.restore` it opens a second run for every resumed
trial, leaves the killed one RUNNING forever and logs one `log_metric` call per key (DESIGN §10).
Here runs are found by tags (`sweep_id`, `trial_id`) in MLflow itself, so a restarted driver
re-attaches to the runs it made before, whatever state it lost; metrics go in one `log_batch` per
report; a report whose step was already logged (a trial resumed from a checkpoint repeats the steps
after it) is skipped. Only the driver writes, so parallel trials never contend for a sqlite store.

The callback is pickled by Ray into the experiment folder (tuner.pkl) and unpickled on resume, so
it holds plain data only; the MLflow client is made in `setup`.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator import space
from orchestrator.trial import SAMPLES_FILE
from trainers.recipe import Recipe

DEFAULT_URI = "sqlite:///mlflow.db"
"""MLflow's own default store, relative to the working directory (DESIGN §10)."""

# Keys Ray adds to every result; they are bookkeeping, not metrics of the recipe.
RAY_KEYS = frozenset(
    {
        "training_iteration", "time_this_iter_s", "time_total_s", "timestamp", "time_since_restore",
        "iterations_since_restore", "timesteps_total", "episodes_total", "timesteps_since_restore",
        "done", "pid", "date", "hostname", "node_ip", "trial_id", "experiment_tag", "config",
        "checkpoint_dir_name", "should_checkpoint",
    }
)


@dataclass(frozen=True)
class SweepInfo:
    """What identifies a sweep in MLflow: its experiment, id, spec and provenance."""

    name: str
    sweep_id: str  # stable across resumes: written once in runs/<name>/sweep.json
    uri: str
    spec_yaml: str
    tags: dict[str, str] = field(default_factory=dict)  # spec hash, git commit, run dir
    view: dict[str, Any] | None = None  # the runs-page view saved with the experiment (comparison_view)


VIEW_KEY = "trials"


def comparison_view(sweep_id: str, search_keys: list[str], objectives: list[tuple[str, str]]) -> dict[str, Any]:
    """The MLflow runs-page view for comparing a sweep's trials, saved as the UI's Views -> Share does.

    The latest sweep's trials as rows (an experiment keeps every sweep of its name; unfiltered, trials
    are folded under their parent run), the swept params and the objectives as columns, the best on
    the first objective on top. `objectives`: (metric, mode) pairs.
    """
    metric, mode = objectives[0]
    return {
        "searchFilter": f"tags.sweep_id = '{sweep_id}' and tags.role = 'trial'",
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": mode == "min",
        "selectedColumns": [f"params.`{key}`" for key in search_keys]
        + [f"metrics.`{name}`" for name, _ in objectives],
    }


def view_url(server: str, experiment_id: str) -> str:
    """The runs page with the saved comparison view (`workflowType`: MLflow 3 otherwise opens an
    experiment on its GenAI trace overview)."""
    query = urlencode({"workflowType": "machine_learning", "viewStateShareKey": VIEW_KEY})
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store go beside its database file (MLflow's default would be ./mlruns of
    whichever folder the process happens to run in); a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()


def recipe_params(base: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """MLflow params of a trial: the flattened recipe (`category_mix.text`, ...) plus raw simplex draws."""
    recipe = Recipe.from_params(base, space.recipe_params(config))
    params = {key: str(value) for key, value in recipe.to_flat_dict().items()}
    params |= {f"optuna.{key}": str(value) for key, value in config.items() if space.is_raw_key(key)}
    return params


def open_store(uri: str) -> None:
    """Touch the tracking store once, creating it (sqlite: schema migrations) if it is new."""
    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


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


def trial_outcome(trial: Trial, completed: bool = False) -> str:
    """FINISHED (ran to the end), STOPPED (stopped early by the scheduler), FAILED, or Ray's status.

    `completed`: called from `on_trial_complete`, before Ray marks the trial TERMINATED.
    """
    if trial.status == Trial.ERROR:
        return "FAILED"
    if trial.status == Trial.TERMINATED or completed:
        return "FINISHED" if (trial.last_result or {}).get("final") else "STOPPED"
    return trial.status


_MLFLOW_STATUS = {"FINISHED": "FINISHED", "STOPPED": "KILLED", "FAILED": "FAILED"}


class MlflowTracker(Callback):
    """Driver-side Tune callback writing the sweep's parent run and one child run per trial."""

    def __init__(self, sweep: SweepInfo, base: dict[str, Any]):
        self.sweep, self.base = sweep, dict(base)
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self.parent_id = ""
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._last_step: dict[str, float] = {}  # run id -> last logged step

    def __getstate__(self) -> dict[str, Any]:
        # Pickled by Ray into the experiment folder: plain data only, re-attached in setup().
        return {"sweep": self.sweep, "base": self.base}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sweep"], state["base"])

    # -- runs -------------------------------------------------------------------------------------

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._connect()
        assert self._client is not None
        return self._client

    def _connect(self) -> None:
        """Client, experiment (created if new) and the sweep's parent run if it exists."""
        self._client = client = MlflowClient(tracking_uri=self.sweep.uri)
        experiment = client.get_experiment_by_name(self.sweep.name)
        self._experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(self.sweep.name, artifact_location=artifact_location(self.sweep.uri))
        )
        if self.sweep.view:
            client.set_experiment_tag(self._experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(self.sweep.view))
        found = self._search(f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.role = 'sweep'")
        self.parent_id = found[0].info.run_id if found else ""

    def setup(self, **info: Any) -> None:
        """Called by Tune as the sweep starts: the parent run, created or RUNNING again on resume."""
        self._connect()
        if self.parent_id:
            self.client.update_run(self.parent_id, status="RUNNING")
            return
        tags = {"sweep_id": self.sweep.sweep_id, "role": "sweep", **self.sweep.tags}
        run = self.client.create_run(self._experiment_id, tags=tags, run_name=self.sweep.name)
        self.parent_id = run.info.run_id
        self.client.log_text(self.parent_id, self.sweep.spec_yaml, "spec.yaml")

    def _search(self, filter_string: str) -> list:
        return self.client.search_runs(
            [self._experiment_id], filter_string=filter_string, max_results=10_000
        )

    def run_id(self, trial: Trial) -> str:
        """The trial's child run: cached, else found by tags (a resumed driver), else created."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = self._search(
            f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.trial_id = '{trial.trial_id}'"
        )
        if found:
            run_id = found[0].info.run_id
            history = self.client.get_metric_history(run_id, "step")
            self._last_step[run_id] = max((m.value for m in history), default=-1.0)
        else:
            run_id = self._create_child(trial)
        self._runs[trial.trial_id] = run_id
        return run_id

    def _create_child(self, trial: Trial) -> str:
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "sweep_id": self.sweep.sweep_id,
            "trial_id": trial.trial_id,
            "role": "trial",
        }
        run = self.client.create_run(self._experiment_id, tags=tags, run_name=f"trial_{trial.trial_id}")
        params = [Param(k, v) for k, v in recipe_params(self.base, trial.config).items()]
        for lo in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=params[lo : lo + 100])
        self._last_step[run.info.run_id] = -1.0
        return run.info.run_id

    @property
    def experiment_id(self) -> str:
        if self._client is None:
            self._connect()
        return self._experiment_id

    def all_run_ids(self) -> dict[str, str]:
        """trial id -> run id for every child run of this sweep in MLflow."""
        runs = self._search(f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.role = 'trial'")
        return {run.data.tags["trial_id"]: run.info.run_id for run in runs}

    # -- Tune hooks -------------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        run_id = self.run_id(trial)
        if self.client.get_run(run_id).info.status != "RUNNING":  # resumed or retried
            self.client.update_run(run_id, status="RUNNING")

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        run_id = self.run_id(trial)
        metrics = report_metrics(result)
        step = metrics.get("step", float(result.get("training_iteration", 0)))
        if step <= self._last_step.get(run_id, -1.0):
            return  # already logged before a resume: the trial repeats the steps after its checkpoint
        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, int(step)) for key, value in metrics.items()]
        for lo in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[lo : lo + 1000])
        self._last_step[run_id] = step

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._close(trial, completed=True)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._close(trial)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Every trial's run in its final state, stale RUNNING runs closed, lost ones trashed, the parent FINISHED."""
        for trial in trials:
            if trial.status in (Trial.TERMINATED, Trial.ERROR):
                self._close(trial)
        known = {t.trial_id for t in trials}
        for run in self._search(f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.role = 'trial'"):
            if run.data.tags.get("trial_id") not in known:
                self._drop_lost(run.info.run_id)
            elif run.info.status == "RUNNING" and run.info.run_id not in self._runs.values():
                self.client.set_terminated(run.info.run_id, status="KILLED")  # cut by the time budget
        self.client.set_terminated(self.parent_id, status="FINISHED")

    def _drop_lost(self, run_id: str) -> None:
        """A run whose trial Tune does not know: started by a driver killed before its next state
        snapshot, so the resumed sweep never re-runs it (its search point is proposed afresh).
        Closed and moved to MLflow's trash (`mlflow gc` or the UI's "deleted" filter still show it),
        so the experiment holds exactly one live run per trial."""
        self.client.set_tag(run_id, "outcome", "LOST")
        self.client.set_terminated(run_id, status="KILLED")
        self.client.delete_run(run_id)

    # -- closing a trial's run ----------------------------------------------------------------------

    def _close(self, trial: Trial, completed: bool = False) -> None:
        run_id = self.run_id(trial)
        outcome = trial_outcome(trial, completed)
        status = _MLFLOW_STATUS.get(outcome, "KILLED")
        run = self.client.get_run(run_id)
        if run.info.status == status:
            return  # closed before (e.g. on_trial_error, then on_experiment_end)
        tags = [RunTag("outcome", outcome)]
        if outcome == "FAILED":
            tags.append(RunTag("error", error_summary(trial.get_error())[:5000]))
        self.client.log_batch(run_id, tags=tags)
        recipe = Recipe.from_params(self.base, space.recipe_params(trial.config))
        self.client.log_text(run_id, recipe.to_yaml(), "recipe.yaml")
        self._log_samples(run_id, trial)
        self.client.set_terminated(run_id, status=status)

    def _log_samples(self, run_id: str, trial: Trial) -> None:
        """The final sample grid, from the trial's last checkpoint (on the sweep's storage)."""
        checkpoint = trial.checkpoint
        if checkpoint is None:
            return
        with checkpoint.as_directory() as folder:
            grid = Path(folder) / SAMPLES_FILE
            if grid.is_file():
                self.client.log_artifact(run_id, str(grid))

    def log_outputs(self, paths: list[Path]) -> None:
        """The sweep's tables (trials.parquet, ...) as artifacts of the parent run."""
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.parent_id, str(path))
