"""Which trial `python -m orchestrator.promote` promotes: the pick rules over a sweep's finished trials.

    ranked = candidates(sweep, "knee")                 # finished trials, the pick first
    metric, mode = pick_metric(sweep, "best:edit_score")  # what ranks them (and the seed check)

Pure functions over polars frames: knee (the Pareto fronts, orchestrator.pareto), best on a metric,
or one named trial. A pick that cannot be met (no such trial or metric, nothing finished) raises
PromoteError naming the valid choices.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from orchestrator import pareto, ranking
from orchestrator.metrics import better
from orchestrator.promote.source import PromoteError, Sweep


def pick_metric(sweep: Sweep, pick: str) -> tuple[str, str]:
    """(metric, mode) that ranks candidates: `score` for knee, the named or first objective for best."""
    objectives = pareto.objectives_of(sweep.spec)
    head, _, arg = pick.partition(":")
    if head == "knee":
        return ("score", "max") if len(objectives) > 1 else next(iter(objectives.items()))
    if head == "best":
        metric = arg or next(iter(objectives))
        return metric, objectives.get(metric) or better(metric)
    return "score", "max"  # trial:<id>: no ranking, score is the headline


def candidates(sweep: Sweep, pick: str) -> list[dict[str, Any]]:
    """Finished trials in the pick rule's order, the pick first (rows of trials.parquet as dicts).

    knee: the Pareto front of the objectives ordered by distance to utopia (its first is the knee), then
    the next front of the remaining trials the same way, and so on (one objective: the same as best).
    best / best:<metric>: by the metric. trial:<id>: that trial alone. When the sweep has a
    confirmation stage, its confirmed recipes come first, ranked by the same rule on their means over
    the new seeds (the knee is the confirmed means' knee), then the other trials as above.
    """
    finished = sweep.finished()
    if finished.is_empty():
        counts = sweep.trials["status"].value_counts().rows() if len(sweep.trials) else []
        found = ", ".join(f"{n} {status}" for status, n in sorted(counts, key=lambda c: (-c[1], c[0])))
        metrics = ", ".join(pareto.objectives_of(sweep.spec))
        raise PromoteError(
            f"{sweep.run.path}: no finished trials with values for {metrics} to promote ({found or 'no trials'})"
        )
    head, _, arg = pick.partition(":")
    if head == "trial":
        return [_trial_row(sweep, finished, arg)]
    return _confirmed_first(sweep, pick, _ranked(sweep, finished, pick))


def _ranked(sweep: Sweep, finished: pl.DataFrame, pick: str) -> list[dict[str, Any]]:
    objectives = pareto.objectives_of(sweep.spec)
    if pick == "knee" and len(objectives) > 1:
        return ranking.by_fronts(finished, objectives)
    metric, mode = pick_metric(sweep, pick)
    if metric not in finished.columns:
        metrics = ", ".join(c for c in finished.columns if _is_metric(sweep, c))
        raise PromoteError(f"--pick {pick}: no metric {metric!r} in trials.parquet; metrics: {metrics}")
    ranked = finished.drop_nulls([metric]).filter(pl.col(metric).cast(pl.Float64).is_not_nan())
    ranked = ranked.sort(metric, descending=mode == "max", maintain_order=True)
    if ranked.is_empty():
        raise PromoteError(f"--pick {pick}: no finished trial has a value for {metric}")
    return ranked.to_dicts()


def _confirmed_first(sweep: Sweep, pick: str, ranked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`ranked` with the confirmed recipes moved to the front, in the pick rule's order on their confirmed means."""
    confirmed = sweep.confirmed()
    if confirmed.is_empty():
        return ranked
    metric, _ = pick_metric(sweep, pick)
    if metric not in confirmed.columns:  # best:<metric> on a metric the confirmation does not summarise
        return ranked
    rows = {row["trial_id"]: row for row in ranked}
    means = confirmed.filter(pl.col("trial_id").is_in(list(rows)))
    order = [row["trial_id"] for row in _ranked(sweep, means, pick)] if not means.is_empty() else []
    return [rows[t] for t in order] + [row for row in ranked if row["trial_id"] not in order]


def _is_metric(sweep: Sweep, column: str) -> bool:
    bookkeeping = {
        "trial_id",
        "status",
        "started_at",
        "error",
        "reports",
        "wall_s",
        "mlflow_run_id",
        "step",
        "final",
    }
    return column not in bookkeeping and column not in sweep.param_columns


def _trial_row(sweep: Sweep, finished: pl.DataFrame, trial_id: str) -> dict[str, Any]:
    valid = ", ".join(finished["trial_id"].to_list())
    match = sweep.trials.filter(pl.col("trial_id") == trial_id)
    if match.is_empty():
        raise PromoteError(
            f"--pick trial:{trial_id}: no such trial in {sweep.run.path}; finished trials: {valid}"
        )
    row = match.row(0, named=True)
    if row["status"] != "FINISHED":
        problem = f"the trial is {row['status']}, not FINISHED"
    elif finished.filter(pl.col("trial_id") == trial_id).is_empty():
        problem = f"the trial has no value for {', '.join(pareto.objectives_of(sweep.spec))}"
    else:
        return row
    raise PromoteError(f"--pick trial:{trial_id}: {problem}; finished trials: {valid}")
