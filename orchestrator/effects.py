"""How each recipe axis moves the scores: effect tables over a sweep's trials, one per axis of the registry.

    effect(trials, axes.AXES["t2i_edit_ratio"])   # score, t2i_score, edit_score by T2I:Edit ratio bucket
    effects(trials)                               # {field: table} for every analysed axis the sweep varied

A table has the axis's group keys (orchestrator.axes: ratio buckets, the dominant category of a mix,
the distinct switch steps, ...), a count `n`, the group's extras (a mix's `mean_weight`) and
`<metric>_mean`, `<metric>_std` for each score present; one row per group, sorted. Only FINISHED
trials count (a trial stopped early by ASHA reports scores from an earlier step, which are not
comparable). An axis counts as swept when one of its columns takes at least two distinct values over
those trials (MLflow frames also carry the base values of unswept params); otherwise the table is
empty, not an error. `trials` is trials.parquet or `results.load_mlflow`.
"""

from __future__ import annotations

import polars as pl

from orchestrator import axes
from orchestrator.axes import Axis
from orchestrator.metrics import SCORES


def finished(trials: pl.DataFrame) -> pl.DataFrame:
    """The trials that ran to the end (all of them when there is no status column)."""
    return trials.filter(pl.col("status") == "FINISHED") if "status" in trials.columns else trials


def effect(trials: pl.DataFrame, axis: Axis) -> pl.DataFrame:
    """n, the extras, and mean and std of each score per group of `axis`; empty when it was not swept."""
    if axis.groups is None:
        raise ValueError(f"{axis.field} has no effect table: it only colours the front (orchestrator/axes.py)")
    done = finished(trials)
    if not axis.swept(done):
        return pl.DataFrame()
    columns = axis.columns(done)
    done = axis.groups.assign(done.drop_nulls(columns), columns)
    keys = axis.groups.keys(columns)
    stats = [pl.len().alias("n"), *axis.groups.extras()]
    for m in (m for m in SCORES if m in done.columns):
        stats += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_std")]
    return done.group_by(keys).agg(stats).sort(keys[0])


def effects(trials: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The effect table of every analysed axis the sweep varied, by Recipe field, in registry order."""
    tables = {axis.field: effect(trials, axis) for axis in axes.analysed()}
    return {field: table for field, table in tables.items() if not table.is_empty()}
