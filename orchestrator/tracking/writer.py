"""Delivers the MLflow tracker's outbox entries: the sweep's parent run, its trial runs, their metrics.

    writer = MlflowWriter(sweep_info)
    writer.deliver({"op": "report", "trial": "ab12cd34", "step": 4.0, "metrics": {...}, "at": ms, "files": []})

One method per entry kind (`op`): sweep_start, trial_start, report, trial_end, sweep_end, outputs.
Runs are found by their tags (sweep_id, role, trial_id), never remembered across processes, so a
resumed driver or a replayed journal finds the runs an earlier one made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from orchestrator.rundir import RunDir
from orchestrator.tracking.store import artifact_location
from orchestrator.tracking.view import VIEW_KEY


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
    def run_dir(self) -> RunDir | None:
        """runs/<name> (from the `run_dir` tag): where the MLflow outbox and driver.log go."""
        folder = self.tags.get("run_dir")
        return RunDir(folder) if folder else None


class MlflowWriter:
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
        client.log_text(parent, self.sweep.spec_yaml, RunDir.SPEC_FILE)

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
            tags = {"mlflow.parentRunId": parent, "sweep_id": self.sweep.sweep_id, "trial_id": trial_id, "role": "trial",
                    **entry.get("tags", {})}
            run = client.create_run(
                self.experiment_id(), start_time=entry["at"], tags=tags, run_name=RunDir.trial_dirname(trial_id)
            )
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
        stage = entry.get("stage", "search")
        for run in self._search(f"tags.sweep_id = '{self.sweep.sweep_id}' and tags.role = 'trial'"):
            if run.data.tags.get("stage", "search") != stage:
                continue  # the other stage's runs: its own Tune experiment knows them
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
        self.client.set_tag(run_id, "outcome", "lost")
        self.client.set_terminated(run_id, status="KILLED", end_time=at)
        self.client.delete_run(run_id)

    def _outputs(self, entry: dict[str, Any]) -> None:
        parent = self.parent()
        if not parent:
            raise LookupError(f"no MLflow run for sweep {self.sweep.sweep_id} to attach its tables to")
        for path in entry["files"]:
            self.client.log_artifact(parent, path)
