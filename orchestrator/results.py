"""A sweep's outputs as polars tables: trials.parquet, curves.parquet, pareto.parquet, and the summary.

    tables = collect(run_dir, spec, run_ids)       # from the Ray Tune experiment folder alone
    paths = write(run_dir, tables)
    print_summary(tables, spec, console)

Read from `ray.tune.ExperimentAnalysis` (trial status, config, last result, error) and each trial's
`result.json` (every report), so the tables can be rebuilt from `runs/<name>` at any time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from ray.tune import ExperimentAnalysis
from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator import space
from orchestrator.spec import SweepSpec
from orchestrator.tracking import error_summary, report_metrics, trial_outcome

FILES = ("trials.parquet", "curves.parquet", "pareto.parquet")


@dataclass
class Tables:
    trials: pl.DataFrame  # one row per trial
    curves: pl.DataFrame  # one row per report
    pareto: pl.DataFrame  # the non-dominated finished trials (rows of `trials`)


def collect(run_dir: Path, spec: SweepSpec, run_ids: dict[str, str] | None = None) -> Tables:
    """Tables of the sweep in `run_dir`; `run_ids` maps trial id -> MLflow run id."""
    analysis = ExperimentAnalysis(str(run_dir))
    trial_rows, curve_rows = [], []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        reports = _reports(Path(trial.path) / "result.json")
        trial_rows.append(
            {
                "trial_id": trial.trial_id,
                "status": trial_outcome(trial),
                "error": error_summary(trial.get_error()) if trial.status == "ERROR" else None,
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
    metrics = [o.metric for o in spec.objectives]
    if trials.is_empty() or any(m not in trials.columns for m in metrics):
        return trials.clear()
    done = trials.filter(pl.col("status") == "FINISHED").drop_nulls(metrics)
    # Flip minimised objectives so that larger is better everywhere.
    signs = [1.0 if o.mode == "max" else -1.0 for o in spec.objectives]
    points = [[s * v for s, v in zip(signs, row, strict=True)] for row in done.select(metrics).rows()]
    keep = [not any(_dominates(q, p) for q in points) for p in points]
    return done.filter(pl.Series(keep, dtype=pl.Boolean))


def _dominates(a: list[float], b: list[float]) -> bool:
    """a is at least as good as b everywhere and better somewhere (larger is better)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


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
    failed = frame.filter(pl.col("status") == "FAILED")
    for row in failed.iter_rows(named=True):
        console.print(f"  {row['trial_id']} failed: {row['error']}")


def _is_param(key: str, spec: SweepSpec) -> bool:
    return key in spec.search or key.partition(".")[0] in spec.search


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
