"""A sweep's outputs as polars tables: trials.parquet, curves.parquet, pareto.parquet, and the summary.

    tables = collect(run_dir, spec, run_ids)       # from the Ray Tune experiment folder alone
    paths = write(run_dir, tables)
    print_summary(tables, spec, console)

    tables = load_sweep("runs/task_ratio")         # the written tables again (notebook, promote)
    trials = load_mlflow("sqlite:///mlflow.db", "task_ratio")   # the trials as MLflow holds them

Read from `ray.tune.ExperimentAnalysis` (trial status, config, start time, last result, error) and
each trial's `result.json` (every report), so the tables can be rebuilt from `runs/<name>` at any time.
The Pareto maths lives in `orchestrator.pareto`, the per-axis effect tables in `orchestrator.effects`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator import pareto, space
from orchestrator.spec import SweepSpec, load_spec

FILES = ("trials.parquet", "curves.parquet", "pareto.parquet")
SPEC_FILE = "spec.yaml"  # the resolved spec, when the sweep keeps a copy in its run dir


@dataclass
class Tables:
    trials: pl.DataFrame  # one row per trial
    curves: pl.DataFrame  # one row per report
    pareto: pl.DataFrame  # the non-dominated finished trials (rows of `trials`)


def collect(run_dir: Path, spec: SweepSpec, run_ids: dict[str, str] | None = None) -> Tables:
    """Tables of the sweep in `run_dir`; `run_ids` maps trial id -> MLflow run id."""
    # Imported here, not at the top: reading tables (notebook, promote) then costs no Ray/MLflow import (≈ 6 s).
    from ray.tune import ExperimentAnalysis

    from orchestrator.tracking import report_metrics, trial_error, trial_outcome

    analysis = ExperimentAnalysis(str(run_dir))
    trial_rows, curve_rows = [], []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        reports = _reports(Path(trial.path) / "result.json")
        trial_rows.append(
            {
                "trial_id": trial.trial_id,
                "status": trial_outcome(trial),
                # when Ray first ran it (unix s): the order in which the searcher proposed the trials
                "started_at": trial.run_metadata.start_time,
                "error": trial_error(trial) if trial.status == "ERROR" else None,
                **space.recipe_params(trial.config),
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
    """Trials in the order they started (`started_at`; trials.parquet of older sweeps: by trial id)."""
    if "started_at" not in trials.columns:
        return trials.sort("trial_id")
    return trials.sort(["started_at", "trial_id"], nulls_last=True)


def write(run_dir: Path, tables: Tables) -> list[Path]:
    """trials.parquet, curves.parquet, pareto.parquet in the run dir (atomically: tmp file + rename)."""
    paths = []
    for name, frame in zip(FILES, (tables.trials, tables.curves, tables.pareto), strict=True):
        path = run_dir / name
        tmp = path.with_suffix(".parquet.tmp")
        frame.write_parquet(tmp)
        tmp.replace(path)
        paths.append(path)
    return paths


class MissingResultsError(FileNotFoundError):
    """A sweep's tables or MLflow experiment that are not there (yet)."""


def load_sweep(run_dir: str | Path) -> Tables:
    """The tables a sweep wrote to `run_dir` (runs/<name>): trials, curves and Pareto front."""
    run_dir = Path(run_dir)
    missing = [str(run_dir / name) for name in FILES if not (run_dir / name).is_file()]
    if missing:
        raise MissingResultsError(
            f"{', '.join(missing)} not found: run the sweep (python -m orchestrator.sweep SPEC) to write "
            "the tables, or finish an interrupted one with --resume"
        )
    return Tables(*(pl.read_parquet(run_dir / name) for name in FILES))


def sweep_objectives(run_dir: str | Path) -> dict[str, str] | None:
    """{metric: mode} of the sweep in `run_dir`, from the spec it keeps there; None when it keeps none."""
    path = Path(run_dir) / SPEC_FILE
    return pareto.objectives_of(load_spec(path)) if path.is_file() else None


def load_mlflow(uri: str, experiment: str, sweep_id: str | None = None) -> pl.DataFrame:
    """The trials of a sweep straight from MLflow: one row per child run tagged role=trial.

    The experiment is named after the sweep; it holds every sweep of that name (a `--fresh` start
    makes a new one), so `sweep_id` picks one (runs/<name>/sweep.json has it) and the latest is the
    default. Columns: trial_id, status (the trial's outcome: FINISHED, STOPPED, FAILED; MLflow's run
    status while it runs), started_at (unix s), every param (a float where every run's value is
    numeric), every metric (its latest value) and mlflow_run_id; rows in start order. Runs in MLflow's
    trash (trials lost to a killed driver) are left out.
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
    rows = [
        {
            "trial_id": run.data.tags.get("trial_id"),
            "status": run.data.tags.get("outcome", run.info.status),
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


def _numeric(column: pl.Series) -> pl.Series:
    """An MLflow param column (strings) as floats when every value is a number, else unchanged."""
    as_float = column.cast(pl.Float64, strict=False)
    return as_float if as_float.null_count() == column.null_count() else column


def sorted_trials(tables: Tables, spec: SweepSpec) -> pl.DataFrame:
    """Trials best first by the objectives in order (finished before stopped before failed)."""
    frame = tables.trials
    metrics = [o.metric for o in spec.objectives if o.metric in frame.columns]
    rank = pl.col("status").replace_strict({"FINISHED": 0, "STOPPED": 1}, default=2, return_dtype=pl.Int8)
    return frame.with_columns(_rank=rank).sort(
        ["_rank", *metrics],
        descending=[False, *[o.mode == "max" for o in spec.objectives if o.metric in metrics]],
        nulls_last=True,
    ).drop("_rank")


def print_summary(tables: Tables, spec: SweepSpec, console: Console) -> None:
    """The trials sorted by the objectives; `*` marks the Pareto set when there are several objectives."""
    frame = sorted_trials(tables, spec)
    params = [key for key in frame.columns if _is_param(key, spec)]
    metrics = list(dict.fromkeys([o.metric for o in spec.objectives] + ["score"]))
    metrics = [m for m in metrics if m in frame.columns]
    pareto = set(tables.pareto["trial_id"]) if not tables.pareto.is_empty() else set()
    table = Table(box=box.SIMPLE_HEAD, title=f"{spec.name}: {len(frame)} trials")
    for column in ["trial", "status", *params, *metrics, "wall s"]:
        table.add_column(column, justify="left" if column in ("trial", "status") else "right", no_wrap=True)
    for row in frame.iter_rows(named=True):
        mark = "*" if row["trial_id"] in pareto and len(spec.objectives) > 1 else ""
        cells = [_cell(row.get(k)) for k in (*params, *metrics)]
        table.add_row(f"{row['trial_id']}{mark}", row["status"], *cells, f"{row['wall_s']:.0f}")
    console.print(table)
    if len(spec.objectives) > 1:
        console.print(f"* Pareto set on {', '.join(o.metric for o in spec.objectives)}: {len(pareto)} trials")
    if (frame["status"] == "STOPPED").any():
        # ASHA stops a trial between full evaluations: its scores are from the last quick benchmark.
        console.print(f"STOPPED trials: scores from the quick benchmark ({spec.base_recipe.eval_items_quick} items), "
                      f"FINISHED ones from the full benchmark ({spec.base_recipe.eval_items} items)")
    failed = frame.filter(pl.col("status") == "FAILED")
    for row in failed.iter_rows(named=True):
        console.print(f"  {row['trial_id']} failed: {row['error']}")


def no_result_cause(tables: Tables) -> str | None:
    """Why a sweep produced nothing, in one line, when no trial has a result (FINISHED or STOPPED):
    the most common error among its trials. None when at least one trial has a result."""
    trials = tables.trials
    if trials.height and trials["status"].is_in(["FINISHED", "STOPPED"]).any():
        return None
    if not trials.height:
        return "no trial ran"
    errors = trials["error"].drop_nulls()
    if errors.is_empty():
        return f"no trial finished ({trials.height} trials, none with an error)"
    failed = int((trials["status"] == "FAILED").sum())
    top, count = errors.value_counts(sort=True).row(0)
    return f"no trial finished: {failed} of {trials.height} failed, {count} with {top}"


def _is_param(key: str, spec: SweepSpec) -> bool:
    return key in spec.search or key.partition(".")[0] in spec.search


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
