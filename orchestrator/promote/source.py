"""The sweep a promotion starts from: its run folder read back, and the recipe each trial ran with.

    sweep = open_sweep(Path("runs/task_ratio"))        # spec, sweep id and trials of a finished sweep
    done = sweep.finished()                            # the trials a pick may choose from
    recipe = sweep.recipe(row, mlflow=client)          # the trial's stored recipe.yaml

Everything a user can get wrong here (no such folder, another spec, no tables) raises PromoteError
with a one-line message before anything is written. A sweep with a storage keeps its trial folders
there (sweep.json says where; RunDir.open finds them).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator import confirm, pareto, results
from orchestrator.rundir import RunDir
from orchestrator.search import trial_recipe
from orchestrator.spec import SweepSpec, load_spec, spec_hash
from trainers.checkpoint import RECIPE_FILE, checkpoint_recipe
from trainers.recipe import Recipe


class PromoteError(Exception):
    """A promotion that cannot start as asked; its message is one line for the user."""


@dataclass
class Sweep:
    """A finished sweep as promote needs it: where, which spec, which trials."""

    run: RunDir
    spec: SweepSpec
    sweep_id: str
    trials: pl.DataFrame
    confirm_runs: pl.DataFrame | None = None  # confirm.parquet: the confirmation stage's runs, if it ran

    def confirmed(self) -> pl.DataFrame:
        """One row per confirmed recipe (mean, SE over its new seeds; orchestrator.confirm); empty without a stage."""
        if self.confirm_runs is None or self.confirm_runs.is_empty():
            return pl.DataFrame()
        metrics = list(dict.fromkeys([*pareto.objectives_of(self.spec), "score"]))
        return confirm.confirmed(self.confirm_runs, metrics, self.trials)

    @property
    def param_columns(self) -> list[str]:
        """The swept params in trials.parquet (`category_mix.text` for a simplex over category_mix)."""
        return [
            c for c in self.trials.columns if c in self.spec.search or c.partition(".")[0] in self.spec.search
        ]

    def finished(self) -> pl.DataFrame:
        """The trials that ran all their steps and have a value (not null, not NaN) for every objective."""
        done = self.trials.filter(pl.col("status") == "FINISHED")
        metrics = [m for m in pareto.objectives_of(self.spec) if m in done.columns]
        return done.drop_nulls(metrics).filter(*[pl.col(m).cast(pl.Float64).is_not_nan() for m in metrics])

    def recipe(self, row: dict[str, Any], mlflow: MlflowClient | None = None) -> Recipe:
        """The recipe the trial ran with: its checkpoint's recipe.yaml, else its MLflow run's, else rebuilt.

        The stored recipe comes first because it is the one the trainer ran; the row of trials.parquet
        is lossy: a null column stands for "not sampled" (a conditional param) but would also be a
        sampled null, and a column's one dtype can turn a choice's 1 into 1.0. Rebuilding from the row
        is left for run folders that keep no trial folders (pruned, or hand-made tables in tests), for
        trials without an MLflow record, and goes through `trial_recipe`, as the trial itself did.
        """
        stored = self._checkpoint_recipe(row["trial_id"])
        if stored is None and mlflow is not None and row.get("mlflow_run_id"):
            stored = _mlflow_recipe(mlflow, row["mlflow_run_id"])
        if stored is not None:
            return stored
        # A null param is a conditional one the trial did not sample: its base value stood.
        return trial_recipe(self.spec.base, {k: row[k] for k in self.param_columns if row.get(k) is not None})

    def _checkpoint_recipe(self, trial_id: str) -> Recipe | None:
        """recipe.yaml of the trial's latest checkpoint kept in the experiment (every checkpoint has one);
        None when there is none here (pruned, or on an object store: then MLflow's copy is read)."""
        found = [folder for folder in self.run.checkpoints(trial_id) if (folder / RECIPE_FILE).is_file()]
        return checkpoint_recipe(found[-1]) if found else None


def _mlflow_recipe(client: MlflowClient, run_id: str) -> Recipe | None:
    """recipe.yaml the sweep's tracker logged to the trial's run; None while it is not there (yet)."""
    with tempfile.TemporaryDirectory(prefix="promote-recipe-") as tmp:
        try:
            path = client.download_artifacts(run_id, RECIPE_FILE, tmp)
        except (MlflowException, OSError):  # no such run, or the trial's close is still in the outbox
            return None
        return Recipe.from_yaml(path)


def open_sweep(run_dir: Path, spec_path: Path | None = None) -> Sweep:
    """Read runs/<name>: sweep.json, the spec (`spec_path`, else the run folder's spec.yaml), trials.parquet.

    The spec must be the one the sweep ran with: its resolved hash is checked against sweep.json's.
    Raises PromoteError (and SpecError for a spec with problems).
    """
    run = RunDir(run_dir)
    if not run_dir.is_dir():
        raise PromoteError(f"{run_dir}: no such run folder")
    if not run.marker.is_file():
        raise PromoteError(f"{run_dir}: not a sweep run folder (no {run.marker.name})")
    run = RunDir.open(run_dir)  # its trial folders where the sweep kept them (a storage, or here)
    stored = run.record()
    spec_path = spec_path or run.spec
    if not spec_path.is_file():
        raise PromoteError(
            f"{run_dir}: no {run.spec.name} in the run folder; pass the sweep's spec with --spec PATH"
        )
    spec = load_spec(spec_path)
    if spec_hash(spec) != stored["spec_hash"]:
        raise PromoteError(
            f"{spec_path}: not the spec the sweep in {run_dir} ran with (the resolved spec's hash differs from "
            f"{run.marker.name}'s); pass the spec it ran with"
        )
    tables = _read_tables(run_dir)
    return Sweep(run, spec, stored["sweep_id"], tables.trials, tables.confirm)


def _read_tables(run_dir: Path) -> results.Tables:
    try:
        return results.load_sweep(run_dir)
    except results.MissingResultsError as exc:
        raise PromoteError(str(exc)) from None
