"""MLflow: one parent run per sweep, one child run per trial, written from the Ray driver only.

    tracker = MlflowTracker(SweepInfo(...), base=spec.base)   # a ray.tune.Callback
    Tuner(..., run_config=RunConfig(callbacks=[tracker]))

Why not Ray's `MLflowLoggerCallback`: on `Tuner.restore` it opens a second run for every resumed
trial, leaves the killed one RUNNING forever and logs one `log_metric` call per key (DESIGN §10).
Here runs are found by tags (`sweep_id`, `trial_id`) in MLflow itself, so a restarted driver
re-attaches to the runs it made before, whatever state it lost; metrics go in one `log_batch` per
report; a report whose step was already logged (a trial resumed from a checkpoint repeats the steps
after it) is skipped. Only the driver writes, so parallel trials never contend for a sqlite store.

A tracking server that goes away mid-sweep stops nothing: every write is first kept in the sweep's
outbox (orchestrator/outbox.py: runs/<name>/mlflow_pending.jsonl, files in runs/<name>/mlflow_pending/)
and delivered in order when the store answers again; what is still pending at the end is delivered
by `--resume`. Since entries name trials by Tune id and every delivery is idempotent (runs found by
tags, logged steps skipped), a replay creates the runs the store never saw and duplicates nothing.

The callback is pickled by Ray into the experiment folder (tuner.pkl) and unpickled on resume, so
it holds plain data only; the outbox and the MLflow client are made on first use.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator import outbox, space
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

    @property
    def run_dir(self) -> Path | None:
        """runs/<name> (from the `run_dir` tag): where the MLflow outbox and driver.log go."""
        folder = self.tags.get("run_dir")
        return Path(folder) if folder else None


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
    experiment on its GenAI trace overview). Without an experiment id (the store was away when the
    sweep ended) the experiments list, where the sweep's experiment goes by its name."""
    if not experiment_id:
        return f"{server.rstrip('/')}/#/experiments"
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
    """Touch the tracking store once, creating it (sqlite: schema migrations) if it is new.

    A server needs no creating: left alone, so that one that is away costs no retries here (the
    tracker keeps the sweep's writes until it is back)."""
    if uri.startswith(("http://", "https://")):
        return
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
    if trial.status == Trial.ERROR:
        return "FAILED"
    if trial.status == Trial.TERMINATED or completed:
        return "FINISHED" if (trial.last_result or {}).get("final") else "STOPPED"
    return trial.status


_MLFLOW_STATUS = {"FINISHED": "FINISHED", "STOPPED": "KILLED", "FAILED": "FAILED"}


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
    """Driver-side Tune callback writing the sweep's parent run and one child run per trial.

    Every write is an entry of the sweep's outbox (orchestrator/outbox.py: runs/<name>/mlflow_pending.jsonl)
    delivered by `_Writer`; entries name trials by their Tune id, not by MLflow run id, so a run the
    store never saw (created while it was away) is created when the entry is delivered.
    """

    def __init__(self, sweep: SweepInfo, base: dict[str, Any]):
        self.sweep, self.base = sweep, dict(base)
        self._writer: _Writer | None = None
        self._outbox: outbox.Outbox | None = None
        self._started: set[str] = set()  # trials whose run this session made sure of
        self._closed: dict[str, str] = {}  # trial id -> the MLflow status its close was kept with

    def __getstate__(self) -> dict[str, Any]:
        # Pickled by Ray into the experiment folder: plain data only, re-attached in setup().
        return {"sweep": self.sweep, "base": self.base}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["sweep"], state["base"])

    @property
    def box(self) -> outbox.Outbox:
        """The outbox (and the writer behind it), made on first use."""
        if self._outbox is None:
            self._writer = writer = _Writer(self.sweep)
            run_dir = self.sweep.run_dir
            self._outbox = outbox.Outbox(
                run_dir / outbox.JOURNAL if run_dir else None, writer.deliver, store=self.sweep.uri,
                log=run_dir / "driver.log" if run_dir else None, on_failure=writer.forget,
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

    # -- what the rest of the sweep reads -----------------------------------------------------------

    # Reads deliver what is pending first; while the store is away they answer '' or {}.

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
        """The sweep's tables (trials.parquet, ...) as artifacts of the parent run."""
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
        params = recipe_params(self.base, trial.config)
        self._write({"op": "trial_start", "trial": trial.trial_id, "params": params, "running": running})

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
        self._write({"op": "sweep_end", "known": known, "touched": sorted(self._started)}, force=True)

    def _close(self, trial: Trial, completed: bool = False) -> None:
        """Outcome and error tags, recipe.yaml, the final samples.png, the run's final status."""
        outcome = trial_outcome(trial, completed)
        status = _MLFLOW_STATUS.get(outcome, "KILLED")
        if self._closed.get(trial.trial_id) == status:
            return  # closed before (e.g. on_trial_error, then on_experiment_end)
        self._start(trial)
        error = trial_error(trial)[:5000] if outcome == "FAILED" else None
        recipe = Recipe.from_params(self.base, space.recipe_params(trial.config)).to_yaml()
        entry = {"op": "trial_end", "trial": trial.trial_id, "outcome": outcome, "status": status,
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
        grid = Path(folder) / SAMPLES_FILE
        yield [grid] if grid.is_file() else []


class _Writer:
    """Delivers the tracker's outbox entries to MLflow. Each delivery is idempotent: runs are found by
    their tags before one is created, a metric step already logged is skipped, params already there are
    not sent again, a run already in its final status is not closed again. So an entry delivered twice
    (its answer lost, the driver killed before the journal was rewritten) changes nothing the second time.
    """

    def __init__(self, sweep: SweepInfo):
        self.sweep = sweep
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self._parent_id = ""
        self._runs: dict[str, str] = {}  # trial id -> run id
        self._last_step: dict[str, float] = {}  # run id -> last logged step

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.sweep.uri)
        return self._client

    def forget(self) -> None:
        """After a failed write: it may have landed all the same, so logged steps are asked again."""
        self._last_step.clear()

    def deliver(self, entry: dict[str, Any]) -> None:
        getattr(self, f"_{entry['op']}")(entry)

    # -- finding runs -------------------------------------------------------------------------------

    def experiment_id(self, create: bool = True) -> str:
        if not self._experiment_id:
            found = self.client.get_experiment_by_name(self.sweep.name)
            if found is not None:
                self._experiment_id = found.experiment_id
            elif create:
                self._experiment_id = self.client.create_experiment(
                    self.sweep.name, artifact_location=artifact_location(self.sweep.uri)
                )
        return self._experiment_id

    def _search(self, filter_string: str) -> list:
        experiment_id = self.experiment_id(create=False)
        if not experiment_id:
            return []
        return self.client.search_runs([experiment_id], filter_string=filter_string, max_results=10_000)

    def parent(self) -> str:
        if not self._parent_id:
            found = self._search(f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.role = 'sweep'")
            self._parent_id = found[0].info.run_id if found else ""
        return self._parent_id

    def child(self, trial_id: str) -> str:
        if trial_id not in self._runs:
            found = self._search(f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.trial_id = '{trial_id}'")
            if not found:
                return ""
            self._runs[trial_id] = found[0].info.run_id
        return self._runs[trial_id]

    def all_run_ids(self) -> dict[str, str]:
        runs = self._search(f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.role = 'trial'")
        return {run.data.tags["trial_id"]: run.info.run_id for run in runs}

    def _run_of(self, entry: dict[str, Any]) -> str:
        run_id = self.child(entry["trial"])
        if not run_id:  # its trial_start was refused before
            raise LookupError(f"no MLflow run for trial {entry['trial']} of sweep {self.sweep.sweep_id}")
        return run_id

    def _logged_step(self, run_id: str) -> float:
        if run_id not in self._last_step:
            history = self.client.get_metric_history(run_id, "step")
            self._last_step[run_id] = max((m.value for m in history), default=-1.0)
        return self._last_step[run_id]

    # -- the entries --------------------------------------------------------------------------------

    def _sweep_start(self, entry: dict[str, Any]) -> None:
        client, experiment_id = self.client, self.experiment_id()
        if self.sweep.view:
            client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(self.sweep.view))
        parent = self.parent()
        if not parent:
            tags = {"sweep_id": self.sweep.sweep_id, "role": "sweep", **self.sweep.tags}
            run = client.create_run(experiment_id, start_time=entry["at"], tags=tags, run_name=self.sweep.name)
            self._parent_id = parent = run.info.run_id
        elif client.get_run(parent).info.status != "RUNNING":
            client.update_run(parent, status="RUNNING")
        client.log_text(parent, self.sweep.spec_yaml, "spec.yaml")

    def _trial_start(self, entry: dict[str, Any]) -> None:
        client, trial_id = self.client, entry["trial"]
        run_id = self.child(trial_id)
        if run_id:
            run = client.get_run(run_id)
            logged, status = run.data.params, run.info.status
        else:
            parent = self.parent()
            if not parent:
                raise LookupError(f"no MLflow run for sweep {self.sweep.sweep_id} to nest trial {trial_id} under")
            tags = {"mlflow.parentRunId": parent, "sweep_id": self.sweep.sweep_id, "trial_id": trial_id, "role": "trial"}
            run = client.create_run(self.experiment_id(), start_time=entry["at"], tags=tags, run_name=f"trial_{trial_id}")
            run_id = self._runs[trial_id] = run.info.run_id
            self._last_step[run_id] = -1.0
            logged, status = {}, "RUNNING"
        params = [Param(k, v) for k, v in entry["params"].items() if k not in logged]
        for lo in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[lo : lo + 100])
        if entry["running"] and status != "RUNNING":  # resumed or retried
            client.update_run(run_id, status="RUNNING")

    def _report(self, entry: dict[str, Any]) -> None:
        run_id, step = self._run_of(entry), entry["step"]
        if step <= self._logged_step(run_id):
            return  # logged before: a resumed trial repeats the steps after its checkpoint, or a replay
        # `step` itself last: if a long report is cut between batches, the step counts as not logged
        items = sorted(entry["metrics"].items(), key=lambda item: item[0] == "step")
        batch = [Metric(key, value, entry["at"], int(step)) for key, value in items]
        for lo in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[lo : lo + 1000])
        self._last_step[run_id] = step

    def _trial_end(self, entry: dict[str, Any]) -> None:
        client, run_id = self.client, self._run_of(entry)
        if client.get_run(run_id).info.status == entry["status"]:
            return  # closed before
        tags = [RunTag("outcome", entry["outcome"])]
        if entry["error"] is not None:
            tags.append(RunTag("error", entry["error"]))
        client.log_batch(run_id, tags=tags)
        client.log_text(run_id, entry["recipe"], "recipe.yaml")
        for path in entry["files"]:
            client.log_artifact(run_id, path)
        client.set_terminated(run_id, status=entry["status"], end_time=entry["at"])

    def _sweep_end(self, entry: dict[str, Any]) -> None:
        known, touched = set(entry["known"]), set(entry["touched"])
        for run in self._search(f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.role = 'trial'"):
            trial_id = run.data.tags.get("trial_id")
            if trial_id not in known:
                self._drop_lost(run.info.run_id, entry["at"])
            elif run.info.status == "RUNNING" and trial_id not in touched:
                self.client.set_terminated(run.info.run_id, status="KILLED", end_time=entry["at"])  # cut by the time budget
        parent = self.parent()
        if parent:
            self.client.set_terminated(parent, status="FINISHED", end_time=entry["at"])

    def _drop_lost(self, run_id: str, at: int) -> None:
        """A run whose trial Tune does not know: started by a driver killed before its next state
        snapshot, so the resumed sweep never re-runs it (its search point is proposed afresh).
        Closed and moved to MLflow's trash (`mlflow gc` or the UI's "deleted" filter still show it),
        so the experiment holds exactly one live run per trial."""
        self.client.set_tag(run_id, "outcome", "LOST")
        self.client.set_terminated(run_id, status="KILLED", end_time=at)
        self.client.delete_run(run_id)

    def _outputs(self, entry: dict[str, Any]) -> None:
        parent = self.parent()
        if not parent:
            raise LookupError(f"no MLflow run for sweep {self.sweep.sweep_id} to attach its tables to")
        for path in entry["files"]:
            self.client.log_artifact(parent, path)


_KINDS = {
    "sweep_start": "sweep run started",
    "trial_start": "trial runs created or reopened",
    "report": "metric reports",
    "trial_end": "trial runs closed (outcome, recipe.yaml, samples.png)",
    "sweep_end": "sweep run ended",
    "outputs": "table uploads",
}


def pending_note(run_dir: Path) -> str | None:
    """What the sweep in `run_dir` still has to write to MLflow, in one line; None if nothing."""
    path = Path(run_dir) / outbox.JOURNAL
    entries = outbox.read_journal(path)
    if not entries:
        return None
    counts = Counter(entry["op"] for entry in entries)
    kinds = ", ".join(f"{_KINDS.get(op, op)}: {n}" for op, n in counts.items())
    trials = sorted({entry["trial"] for entry in entries if "trial" in entry})
    of_trials = f"; trials {', '.join(trials)}" if trials else ""
    return f"{len(entries)} MLflow writes pending in {path} ({kinds}{of_trials})"
