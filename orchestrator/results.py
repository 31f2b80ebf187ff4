"""A sweep's outputs as polars tables: one row per trial, one per report, and the Pareto front.

    tables = collect(run_dir, spec, run_ids)       # from the Ray Tune experiment folder alone
    paths = write(run_dir, tables)                 # RunDir's trials, curves and pareto parquet files

    tables = load_sweep("runs/task_ratio")         # the written tables again (notebook, promote)
    trials = load_mlflow("sqlite:///mlflow.db", "task_ratio")   # the trials as MLflow holds them

Read from `ray.tune.ExperimentAnalysis` (trial status, config, start time, last result, error) and
each trial's `result.json` (every report), so the tables can be rebuilt from `runs/<name>` at any time.
The Pareto maths lives in `orchestrator.pareto`, the per-axis effect tables in `orchestrator.effects`,
the console summary in `orchestrator.summary`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from orchestrator import pareto
from orchestrator.rundir import RunDir
from orchestrator.search import CONFIRM_KEY, recipe_params
from orchestrator.spec import SweepSpec, load_spec


@dataclass
class Tables:
    trials: pl.DataFrame  # one row per trial
    curves: pl.DataFrame  # one row per report
    pareto: pl.DataFrame  # the non-dominated finished trials (rows of `trials`)
    confirm: pl.DataFrame | None = None  # one row per confirmation run (its `confirm_of` trial, `seed`), if any


def collect(run_dir: Path, spec: SweepSpec, run_ids: dict[str, str] | None = None) -> Tables:
    """Tables of the sweep in `run_dir`; `run_ids` maps trial id -> MLflow run id."""
    # Imported here, not at the top: reading tables (notebook, promote) then costs no Ray/MLflow import (≈ 6 s).
    from ray.tune import ExperimentAnalysis

    from orchestrator.ray_status import error_summary, report_metrics, trial_outcome

    analysis = ExperimentAnalysis(str(run_dir))
    trial_rows, curve_rows = [], []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        reports = _reports(Path(trial.path) / RunDir.RESULT_FILE)
        trial_rows.append(
            {
                "trial_id": trial.trial_id,
                "status": trial_outcome(trial),
                # when Ray first ran it (unix s): the order in which the searcher proposed the trials
                "started_at": trial.run_metadata.start_time,
                # the experiment folder's copy: the driver's local one went with its Ray session
                "error": error_summary(trial.get_error()) if trial.status == "ERROR" else None,
                **recipe_params(trial.config),
                **({CONFIRM_KEY: trial.config[CONFIRM_KEY]} if CONFIRM_KEY in trial.config else {}),
                **report_metrics(trial.last_result or {}),
                "reports": len(reports),
                "wall_s": float((trial.last_result or {}).get("time_total_s", 0.0)),
                "mlflow_run_id": (run_ids or {}).get(trial.trial_id),
            }
        )
        # A trial resumed from a checkpoint repeats the steps after it: keep the last report per step.
        by_step = {r.get("step", r.get("training_iteration")): r for r in reports}
        curve_rows += [
            {"trial_id": trial.trial_id, "time_total_s": r.get("time_total_s"), **report_metrics(r)}
            for r in by_step.values()
        ]
    trials = pl.DataFrame(trial_rows, infer_schema_length=None)
    curves = pl.DataFrame(curve_rows, infer_schema_length=None)
    return Tables(trials, curves, pareto_front(trials, spec))


def _reports(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pareto_front(trials: pl.DataFrame, spec: SweepSpec) -> pl.DataFrame:
    """Finished trials that no other finished trial dominates on the spec's objectives."""
    objectives = pareto.objectives_of(spec)
    if trials.is_empty() or any(m not in trials.columns for m in objectives):
        return trials.clear()
    return pareto.pareto_front(trials.filter(pl.col("status") == "FINISHED"), objectives)


def in_start_order(trials: pl.DataFrame) -> pl.DataFrame:
    """Trials in the order they started (`started_at`; the trials table of an older sweep: by trial id)."""
    if "started_at" not in trials.columns:
        return trials.sort("trial_id")
    return trials.sort(["started_at", "trial_id"], nulls_last=True)


def write(run_dir: Path, tables: Tables) -> list[Path]:
    """The tables as the run dir's parquet files (RunDir.tables, and confirm.parquet when there is a
    confirmation stage; atomically: tmp file + rename)."""
    run = RunDir(run_dir)
    pairs = list(zip(run.tables, (tables.trials, tables.curves, tables.pareto), strict=True))
    if tables.confirm is not None:
        pairs.append((run.confirm_table, tables.confirm))
    paths = []
    for path, frame in pairs:
        tmp = path.with_suffix(".parquet.tmp")
        frame.write_parquet(tmp)
        tmp.replace(path)
        paths.append(path)
    return paths


class MissingResultsError(FileNotFoundError):
    """A sweep's tables or MLflow experiment that are not there (yet)."""


def load_sweep(run_dir: str | Path) -> Tables:
    """The tables a sweep wrote to `run_dir` (runs/<name>): trials, curves, Pareto front (and confirm, if any)."""
    paths = RunDir(run_dir).tables
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise MissingResultsError(
            f"{', '.join(missing)} not found: run the sweep (python -m orchestrator.sweep SPEC) to write "
            "the tables, or finish an interrupted one with --resume"
        )
    confirm = RunDir(run_dir).confirm_table
    return Tables(*(pl.read_parquet(path) for path in paths), confirm=pl.read_parquet(confirm) if confirm.is_file() else None)


def sweep_objectives(run_dir: str | Path) -> dict[str, str] | None:
    """{metric: mode} of the sweep in `run_dir`, from the spec it keeps there; None when it keeps none."""
    path = RunDir(run_dir).spec
    return pareto.objectives_of(load_spec(path)) if path.is_file() else None


def load_mlflow(uri: str, experiment: str, sweep_id: str | None = None, stage: str | None = "search") -> pl.DataFrame:
    """The trials of a sweep straight from MLflow: one row per child run tagged role=trial.

    The experiment is named after the sweep; it holds every sweep of that name (a `--fresh` start
    makes a new one), so `sweep_id` picks one (runs/<name>/sweep.json has it) and the latest is the
    default. Columns: trial_id, status (the trial's outcome: FINISHED, STOPPED, FAILED; MLflow's run
    status while it runs), stage (search, or confirm for the confirmation stage's runs), started_at (unix s), every param (a float where every run's value is
    numeric), every metric (its latest value) and mlflow_run_id; rows in start order. Runs in MLflow's
    trash (trials lost to a killed driver) are left out. `stage`: "search" (the default), "confirm",
    or None for both.
    """
    from mlflow.tracking import MlflowClient  # see collect()

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise MissingResultsError(f"no MLflow experiment named {experiment!r} at {uri}")
    if sweep_id is None:
        sweeps = client.search_runs(
            [found.experiment_id], "tags.role = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if not sweeps:
            raise MissingResultsError(f"no sweep in the MLflow experiment {experiment!r} at {uri}")
        sweep_id = sweeps[0].data.tags["sweep_id"]
    runs = client.search_runs(
        [found.experiment_id], f"tags.role = 'trial' and tags.sweep_id = '{sweep_id}'", max_results=50_000
    )
    if stage is not None:
        runs = [run for run in runs if run.data.tags.get("stage", "search") == stage]
    rows = [
        {
            "trial_id": run.data.tags.get("trial_id"),
            "status": _OUTCOMES.get(run.data.tags.get("outcome", ""), run.info.status),
            "stage": run.data.tags.get("stage", "search"),
            "started_at": run.info.start_time / 1000 if run.info.start_time else None,
            **run.data.params,
            **run.data.metrics,
            "mlflow_run_id": run.info.run_id,
        }
        for run in runs
    ]
    frame = pl.DataFrame(rows, infer_schema_length=None)
    if frame.is_empty():
        return frame
    params = {key for run in runs for key in run.data.params}
    return in_start_order(frame.with_columns([_numeric(frame[key]) for key in sorted(params)]))


# the `outcome` tags the tracker writes (orchestrator.tracking.callback.OUTCOME_TAGS), as the tables' statuses
_OUTCOMES = {"finished": "FINISHED", "stopped_early": "STOPPED", "failed": "FAILED", "lost": "LOST"}


def _numeric(column: pl.Series) -> pl.Series:
    """An MLflow param column (strings) as floats when every value is a number, else unchanged."""
    as_float = column.cast(pl.Float64, strict=False)
    return as_float if as_float.null_count() == column.null_count() else column
