"""Pareto analysis of a sweep's trials: the front, its knee and its hypervolume.

    objectives = objectives_of(spec)                       # {"t2i_score": "max", "edit_score": "max"}
    front = pareto_front(trials, objectives)               # the non-dominated rows, in input order
    best = knee(front, objectives)                         # one row as a dict
    hv = hypervolume(front, objectives, reference=[0, 0])  # in the metrics' own units

Pure functions over polars frames and numpy arrays: no Ray, no MLflow, no files. `results.py`,
`orchestrator/promote/` and the notebook all use them, and tests/test_pareto.py checks them against Optuna's
own Pareto front and hypervolume. Objectives map a metric column to "max" or "min".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

MODES = ("max", "min")


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
