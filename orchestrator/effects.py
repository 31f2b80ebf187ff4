"""How each recipe axis moves the scores: per-axis effect tables over a sweep's trials.

    effect_by_ratio(trials)      # score, t2i_score, edit_score by T2I:Edit ratio bucket
    effect_by_category(trials)   # ... by the dominant category of category_mix
    effect_by_switch(trials)     # ... by teacher_switch_step

Each table has one row per group (sorted), a count `n` and `<metric>_mean`, `<metric>_std` for each
score present. Only FINISHED trials count (a trial stopped early by ASHA reports scores from an
earlier step, which are not comparable). An axis counts as swept when its column exists and takes at
least two distinct values over those trials (MLflow frames also carry the base values of unswept
params); otherwise the table is empty, not an error. `trials` is trials.parquet or `load_mlflow`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

SCORES = ("score", "t2i_score", "edit_score")
RATIO = "t2i_edit_ratio"
SWITCH = "teacher_switch_step"
MIX_PREFIX = "category_mix."
# Edges of the ratio buckets: centred on the 0.1 grid the shipped specs sample (9:1 ... 1:9), so a
# bucket holds one ratio of the paper's kind; ratios outside [0.05, 0.95) join the end buckets.
RATIO_BUCKETS = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))


def finished(trials: pl.DataFrame) -> pl.DataFrame:
    """The trials that ran to the end (all of them when there is no status column)."""
    return trials.filter(pl.col("status") == "FINISHED") if "status" in trials.columns else trials


def is_swept(trials: pl.DataFrame, column: str) -> bool:
    """The column exists and takes at least two distinct non-null values."""
    return column in trials.columns and trials[column].drop_nulls().n_unique() >= 2


def mix_columns(trials: pl.DataFrame) -> list[str]:
    """The category weights (`category_mix.<name>`), raw simplex draws excluded."""
    return [c for c in trials.columns if c.startswith(MIX_PREFIX) and ".raw." not in c]


def mix_swept(trials: pl.DataFrame) -> bool:
    return any(is_swept(trials, c) for c in mix_columns(trials))


def _summary(frame: pl.DataFrame, by: str) -> pl.DataFrame:
    """n, mean and std of each score per value of `by`, sorted by it."""
    scores = [m for m in SCORES if m in frame.columns]
    stats = [pl.len().alias("n")]
    for m in scores:
        stats += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std().alias(f"{m}_std")]
    return frame.group_by(by).agg(stats).sort(by)


def effect_by_ratio(trials: pl.DataFrame, buckets: Sequence[float] = RATIO_BUCKETS) -> pl.DataFrame:
    """Scores by T2I:Edit ratio bucket: columns ratio_lo, ratio_hi, ratio (bucket centre), n, *_mean, *_std.

    `buckets` are the inner edges, ascending; the first bucket starts at 0 and the last ends at 1.
    """
    done = finished(trials)
    if not is_swept(done, RATIO):
        return pl.DataFrame()
    done = done.drop_nulls([RATIO])
    edges = np.array([0.0, *buckets, 1.0])
    index = np.searchsorted(np.asarray(buckets), done[RATIO].to_numpy(), side="right")
    done = done.with_columns(ratio_lo=pl.Series(edges[index]), ratio_hi=pl.Series(edges[index + 1]))
    table = _summary(done, "ratio_lo").join(done.select("ratio_lo", "ratio_hi").unique(), on="ratio_lo")
    table = table.with_columns(ratio=(pl.col("ratio_lo") + pl.col("ratio_hi")) / 2)
    columns = ("ratio_lo", "ratio_hi", "ratio")
    return table.select(*columns, pl.exclude(*columns)).sort("ratio_lo")  # a join does not keep order


def dominant_category(trials: pl.DataFrame) -> pl.DataFrame:
    """`trials` with `dominant_category` (the largest category_mix weight; the first on ties) and
    `dominant_weight` (that weight over the sum of the weights)."""
    columns = mix_columns(trials)
    names = [c.removeprefix(MIX_PREFIX) for c in columns]
    weights = pl.concat_list([pl.col(c).cast(pl.Float64) for c in columns])
    return trials.with_columns(
        dominant_category=weights.list.arg_max().replace_strict(list(range(len(names))), names),
        dominant_weight=weights.list.max() / weights.list.sum(),
    )


def effect_by_category(trials: pl.DataFrame) -> pl.DataFrame:
    """Scores by dominant category of the data mix: dominant_category, n, mean_weight, *_mean, *_std."""
    done = finished(trials)
    if not mix_swept(done):
        return pl.DataFrame()
    done = dominant_category(done.drop_nulls(mix_columns(done)))
    weight = done.group_by("dominant_category").agg(mean_weight=pl.col("dominant_weight").mean())
    table = _summary(done, "dominant_category").join(weight, on="dominant_category")
    columns = ("dominant_category", "n", "mean_weight")
    return table.select(*columns, pl.exclude(*columns)).sort("dominant_category")


def effect_by_switch(trials: pl.DataFrame) -> pl.DataFrame:
    """Scores by teacher-switch step k* (base teacher for student steps k < k*, specialist after)."""
    done = finished(trials)
    if not is_swept(done, SWITCH):
        return pl.DataFrame()
    done = done.drop_nulls([SWITCH]).with_columns(pl.col(SWITCH).cast(pl.Int64))
    return _summary(done, SWITCH)
