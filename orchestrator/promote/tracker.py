"""The promotion's records in MLflow: its run in the sweep's experiment and its registered model version.

    tracker = PromotionTracker.open(uri, sweep_name)             # refuses a store without the sweep
    run_id = tracker.start(recipe, lineage)                      # role=promotion, lineage tags, params
    result = distill(recipe, world, on_report=tracker.on_report, progress=True)
    version = tracker.register(folder, f"{name}-student")       # the student folder, a new version
    tracker.end("FINISHED")

The run is not a trial, so it has no `mlflow.parentRunId` and no `trial_id` tag (the sweep's tracker
finds trial runs by `sweep_id` + `trial_id`); `promoted_from` names the source trial's run instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from orchestrator.promote.source import PromoteError
from orchestrator.ray_status import report_metrics
from trainers.checkpoint import RECIPE_FILE
from trainers.recipe import Recipe

ARTIFACT_PATH = "student"  # the folder's place among the run's artifacts (the registry's source)


@dataclass(frozen=True)
class Lineage:
    """Where a promoted student comes from, as tags of its run and fields of its card."""

    sweep: str
    sweep_id: str
    source_trial_id: str
    source_run_id: str  # the trial's MLflow run ('' when trials.parquet has none)
    pick: str
    seed_check: str = "none"  # none | decisive | forced (--force past a lead within the seed noise)

    def tags(self) -> dict[str, str]:
        return {
            "role": "promotion",
            "sweep_id": self.sweep_id,
            "source_trial_id": self.source_trial_id,
            "source_run_id": self.source_run_id,
            "promoted_from": self.source_run_id or self.source_trial_id,
            "pick": self.pick,
            "seed_check": self.seed_check,
        }


class PromotionTracker:
    """The promotion's MLflow run in the sweep's experiment, and its registered model version."""

    def __init__(self, client: MlflowClient, experiment_id: str):
        self.client, self.experiment_id = client, experiment_id
        self.run_id, self.lineage = "", None

    @classmethod
    def open(cls, uri: str, experiment: str) -> PromotionTracker:
        """The sweep's store and experiment; PromoteError (nothing created) when either is missing."""
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise PromoteError(
                f"no MLflow store at {uri} (relative to {Path.cwd()}): run promote from the folder the sweep "
                "ran in, or name its store with --tracking-uri"
            )
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise PromoteError(
                f"no MLflow experiment {experiment!r} at {uri}: is this the store the sweep logged to?"
            )
        return cls(client, found.experiment_id)

    def start(self, recipe: Recipe, lineage: Lineage) -> str:
        """Create the run: lineage tags, the flattened recipe as params, recipe.yaml."""
        self.lineage = lineage
        run = self.client.create_run(
            self.experiment_id, tags=lineage.tags(), run_name=f"promote_{lineage.source_trial_id}"
        )
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in recipe.to_flat_dict().items()]
        for lo in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[lo : lo + 100])
        self.client.log_text(self.run_id, recipe.to_yaml(), RECIPE_FILE)
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in report_metrics(metrics).items()]
        for lo in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[lo : lo + 1000])

    def on_report(self, step: int, metrics: dict[str, float], save_checkpoint: Callable) -> bool:
        """distill's `on_report`: every report as metrics at its generator step; never stops the run."""
        self.log_metrics(metrics, step)
        return False

    def register(self, folder: Path, model_name: str) -> str:
        """Log the student folder as an artifact and register it as a new version of `model_name`."""
        self.client.log_artifacts(self.run_id, str(folder), ARTIFACT_PATH)
        if not self.client.search_registered_models(filter_string=f"name = '{model_name}'"):
            self.client.create_registered_model(
                model_name, description=f"DMD students promoted from the sweep {self.lineage.sweep!r}"
            )
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{ARTIFACT_PATH}"
        version = self.client.create_model_version(
            model_name, source=source, run_id=self.run_id, tags=self.lineage.tags()
        )
        return str(version.version)

    def end(self, status: str) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)
