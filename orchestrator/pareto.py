"""Pareto analysis of a sweep's trials: the front, its knee and its hypervolume.

    objectives = objectives_of(spec)                       # {"t2i_score": "max", "edit_score": "max"}
    front = pareto_front(trials, objectives)               # the non-dominated rows, in input order
    best = knee(front, objectives)                         # one row as a dict
    hv = hypervolume(front, objectives, reference=[0, 0])  # in the metrics' own units
    kept = noise_aware_front(trials, objectives)           # the rows no row beats beyond 2 SE on every axis

Pure functions over polars frames and numpy arrays: no Ray, no MLflow, no files. `results.py`,
`orchestrator/promote/` and the notebook all use them, and tests/test_pareto.py checks them against Optuna's
own Pareto front and hypervolume. Objectives map a metric column to "max" or "min".

Noise. Every evaluation reports a bootstrap standard error beside each score (`<metric>_se`), and the
plain front calls a trial dominated over differences far inside that noise. The noise-aware front
(`noise_aware_mask`, `noise_aware_front`, `with_fronts`) keeps every row that no other row beats
*clearly*: row A is clearly dominated when some row B is better than A on every objective by more
than z·SE_diff, SE_diff = sqrt(se_A² + se_B²), z = 2 (`Z`, the confirmation stage's rule). It is a
superset of the plain front; with every SE 0 it is the rows that no row beats strictly on every axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

MODES = ("max", "min")
Z = 2.0  # differences within Z SE of the difference are not called (as orchestrator/confirm.py)


def objectives_of(spec: Any) -> dict[str, str]:
    """{metric: mode} of a SweepSpec's objectives, in the spec's order."""
    return {o.metric: o.mode for o in spec.objectives}


def _losses(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Points as losses (smaller is better on every axis): maximised axes are negated."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != len(modes):
        raise ValueError(f"expected points of shape (n, {len(modes)}), found {points.shape}")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"expected modes 'max' or 'min', found {bad[0]!r}")
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    return points * signs


def pareto_mask(points: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `points` (n × d), one mode per column.

    A row is dominated when another row is at least as good on every axis and strictly better on
    one; identical rows do not dominate each other, so duplicates of a front point are all kept
    (as Optuna's `study.best_trials` does). Rows with a NaN are never on the front and dominate nothing.
    """
    loss = _losses(points, modes)
    finite = ~np.isnan(loss).any(axis=1)
    mask = np.zeros(len(loss), dtype=bool)
    valid = loss[finite]
    keep = np.ones(len(valid), dtype=bool)
    for i, row in enumerate(valid):  # O(n²·d): sweeps have hundreds of trials, not millions
        no_worse = (valid <= row).all(axis=1)
        better = (valid < row).any(axis=1)
        keep[i] = not (no_worse & better).any()
    mask[finite] = keep
    return mask


def _complete(df: pl.DataFrame, objectives: Mapping[str, str]) -> pl.DataFrame:
    """Rows of `df` with a finite-or-infinite (not null, not NaN) value for every objective."""
    missing = [m for m in objectives if m not in df.columns]
    if missing:
        raise ValueError(
            f"no column {missing[0]!r} among the trials' columns ({', '.join(df.columns) or 'none'})"
        )
    if not objectives:
        raise ValueError("expected at least one objective, found none")
    metrics = list(objectives)
    df = df.drop_nulls(metrics)
    if df.is_empty():
        return df
    return df.filter(~pl.any_horizontal([pl.col(m).cast(pl.Float64).is_nan() for m in metrics]))


def _points(df: pl.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    return df.select([pl.col(m).cast(pl.Float64) for m in objectives]).to_numpy().reshape(len(df), -1)


def pareto_front(df: pl.DataFrame, objectives: Mapping[str, str]) -> pl.DataFrame:
    """The rows of `df` no other row dominates on `objectives`, in their original order.

    Rows with a null or NaN objective are dropped first. Exact ties (identical points) are all kept:
    neither dominates the other.
    """
    df = _complete(df, objectives)
    if df.is_empty():
        return df
    mask = pareto_mask(_points(df, objectives), list(objectives.values()))
    return df.filter(pl.Series(mask, dtype=pl.Boolean))


def normalised(front: pl.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """Each objective min-max normalised over `front` so that 1 is best and 0 worst (n × d).

    An objective constant over the front is 1 for every row: it does not separate them.
    """
    points = _points(front, objectives)
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = (points - lo) / span
    scaled = np.where([m == "max" for m in objectives.values()], scaled, 1.0 - scaled)
    return np.where(span > 0, scaled, 1.0)


def knee(front: pl.DataFrame, objectives: Mapping[str, str]) -> dict[str, Any]:
    """The front's row closest to utopia, as a dict.

    Rule: min-max normalise each objective over the front so that 1 is best (an objective constant
    over the front counts as 1 for every point), then pick the smallest Euclidean distance to the
    utopia point (1, ..., 1). Ties go to the first row in front order; a one-point front gives that
    point. Rows with a null or NaN objective are ignored; an empty front is an error.
    """
    front = _complete(front, objectives)
    if front.is_empty():
        raise ValueError(f"no trial with values for {', '.join(objectives)}: the front is empty")
    distance = np.linalg.norm(1.0 - normalised(front, objectives), axis=1)
    return front.row(int(np.argmin(distance)), named=True)  # argmin returns the first of ties


def hypervolume(front: pl.DataFrame, objectives: Mapping[str, str], reference: Sequence[float]) -> float:
    """Volume of objective space that the front dominates, bounded by `reference` (1 to 3 objectives).

    `reference` is in the metrics' own units, one value per objective in the mapping's order, and
    should be worse than every front point on each axis (e.g. 0 for scores in [0, 1] that are
    maximised). Points not strictly better than the reference on every axis contribute nothing.
    Rows need not be non-dominated: dominated ones add no volume.
    """
    modes = list(objectives.values())
    if not 1 <= len(modes) <= 3:
        raise ValueError(f"expected 1 to 3 objectives for a hypervolume, found {len(modes)}")
    if len(reference) != len(modes):
        raise ValueError(f"expected {len(modes)} reference values (one per objective), found {len(reference)}")
    front = _complete(front, objectives)
    loss = _losses(_points(front, objectives), modes)
    ref = _losses(np.asarray([reference], dtype=float), modes)[0]
    loss = loss[(loss < ref).all(axis=1)]
    if len(loss) == 0:
        return 0.0
    loss = np.unique(loss[pareto_mask(loss, ["min"] * len(modes))], axis=0)
    return float(_volume(loss, ref))


def _volume(loss: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of mutually non-dominated losses (all < ref), by slicing along the last axis."""
    if loss.shape[1] == 1:
        return float(ref[0] - loss[:, 0].min())
    if loss.shape[1] == 2:
        # sorted by the first loss, the second decreases: a staircase of rectangles
        order = np.argsort(loss[:, 0])
        x, y = loss[order, 0], loss[order, 1]
        widths = np.append(x[1:], ref[0]) - x
        return float((widths * (ref[1] - y)).sum())
    # 3 objectives: between consecutive z values, the slab's area is the 2-D hypervolume of the
    # points at or below that z (re-filtered, since points non-dominated in 3-D may be dominated in 2-D)
    order = np.argsort(loss[:, 2])
    loss = loss[order]
    z_next = np.append(loss[1:, 2], ref[2])
    total = 0.0
    for i in range(len(loss)):
        depth = z_next[i] - loss[i, 2]
        if depth <= 0:
            continue
        slab = loss[: i + 1, :2]
        slab = np.unique(slab[pareto_mask(slab, ["min", "min"])], axis=0)
        total += depth * _volume(slab, ref[:2])
    return total


# -- the noise-aware front --------------------------------------------------------------------------


def se_column(metric: str) -> str:
    """The column holding `metric`'s standard error, as evaluations name it: `t2i_score` -> `t2i_score_se`,
    a group's `t2i_score/text` -> `t2i_score_se/text`."""
    head, slash, group = metric.partition("/")
    return f"{head}_se{slash}{group}"


def noise_aware_mask(
    points: np.ndarray, errors: np.ndarray, modes: Sequence[str], z: float = Z
) -> np.ndarray:
    """Boolean mask of the rows of `points` (n × d) that no other row clearly dominates.

    `errors` (n × d) are the standard errors of `points`; NaN counts as 0 (the plain rule on that
    value). Row A is *clearly dominated* when some row B is better than A on every axis by more than
    `z`·sqrt(se_A² + se_B²) on that axis. The rows kept are a superset of `pareto_mask`'s; with every
    SE 0 they are the rows no row beats strictly on every axis (a row tied with a better one on some
    axis stays). Rows with a NaN point are never kept and dominate nothing.
    """
    loss = _losses(points, modes)
    se = np.asarray(errors, dtype=float)
    if se.shape != loss.shape:
        raise ValueError(f"expected standard errors of shape {loss.shape} (one per point), found {se.shape}")
    se = np.nan_to_num(se, nan=0.0, posinf=np.inf)
    if (se < 0).any():
        raise ValueError(f"expected standard errors >= 0, found {se[se < 0][0]:g}")
    if not (z >= 0 and np.isfinite(z)):
        raise ValueError(f"expected z >= 0 (how many SEs a difference must exceed), found {z}")
    finite = np.flatnonzero(~np.isnan(loss).any(axis=1))
    valid, valid_se = loss[finite], se[finite]
    mask = np.zeros(len(loss), dtype=bool)
    for i, row in enumerate(valid):  # O(n²·d), as pareto_mask
        margin = z * np.sqrt(valid_se[i] ** 2 + valid_se**2)
        with np.errstate(invalid="ignore"):  # inf - inf: no difference to call
            clearly = (valid < row - margin).all(axis=1)
        mask[finite[i]] = not clearly.any()  # a row never beats itself: margin >= 0
    return mask


def _errors(df: pl.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """Each objective's standard error per row (n × d): its `se_column`, 0 where that is missing or null."""
    zeros = np.zeros(len(df))
    return np.column_stack([
        df[se_column(m)].cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy() if se_column(m) in df.columns
        else zeros for m in objectives
    ]).reshape(len(df), len(objectives))


def noise_aware_front(df: pl.DataFrame, objectives: Mapping[str, str], z: float = Z) -> pl.DataFrame:
    """The rows of `df` no other row clearly dominates (`noise_aware_mask`), in their original order.

    Standard errors come from each objective's `se_column`; a missing column or a null SE counts as 0.
    Rows with a null or NaN objective are dropped first.
    """
    df = _complete(df, objectives)
    if df.is_empty():
        return df
    mask = noise_aware_mask(_points(df, objectives), _errors(df, objectives), list(objectives.values()), z)
    return df.filter(pl.Series(mask, dtype=pl.Boolean))


def with_fronts(df: pl.DataFrame, objectives: Mapping[str, str], z: float = Z) -> pl.DataFrame:
    """`df` with two boolean columns: `on_front` (the plain Pareto front) and `not_clearly_dominated`
    (the noise-aware set). Rows with a null or NaN objective are on neither."""
    _complete(df, objectives)  # checks the columns
    indexed = df.with_row_index("_fronts_row")
    complete = _complete(indexed, objectives)
    rows = {
        "on_front": pareto_front(complete, objectives)["_fronts_row"],
        "not_clearly_dominated": noise_aware_front(complete, objectives, z)["_fronts_row"],
    }
    flags = [pl.col("_fronts_row").is_in(kept.implode()).alias(name) for name, kept in rows.items()]
    return indexed.with_columns(flags).drop("_fronts_row")


# -- the hypervolume's reference ---------------------------------------------------------------------


def reference_point(df: pl.DataFrame, objectives: Mapping[str, str], margin: float = 0.1) -> list[float]:
    """A reference for `hypervolume`: each objective's worst value over `df`, pushed `margin` of its range
    further out (by `margin` itself when the range is zero), so every row counts."""
    points = _points(_complete(df, objectives), objectives)
    if len(points) == 0:
        raise ValueError(f"no trial with values for {', '.join(objectives)}: no reference point")
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = np.where(hi > lo, (hi - lo) * margin, margin)
    return [float(lo_i - p if m == "max" else hi_i + p)
            for m, lo_i, hi_i, p in zip(objectives.values(), lo, hi, pad, strict=True)]


def hypervolume_history(
    trials: pl.DataFrame, objectives: Mapping[str, str], reference: Sequence[float]
) -> list[float]:
    """Hypervolume of the first k rows of `trials` for k = 1..n: how the front grew as trials came in.

    Pass the trials in start order (`results.in_start_order`) and only those whose scores count
    (finished ones); a row with a null objective adds nothing when it comes.
    """
    _complete(trials, objectives)  # checks the columns
    metrics, modes = list(objectives), list(objectives.values())
    rows = _points(trials, objectives)  # a null objective becomes NaN
    history, front, volume = [], np.empty((0, len(metrics))), 0.0
    for row in rows:
        if not np.isnan(row).any():
            front = np.vstack([front, row])
            front = front[pareto_mask(front, modes)]  # dominated points never add volume again
            volume = hypervolume(pl.DataFrame(front, schema=metrics, orient="row"), objectives, reference)
        history.append(volume)
    return history
