"""Finished trials in order of merit: by one metric, or front by front nearest the knee.

    ordered = ranked(finished, {"t2i_score": "max", "edit_score": "max"})   # rows as dicts, best first

One objective: by its value. Several: non-dominated sorting, each front ordered by distance to
utopia after min-max normalisation over that front (the knee's rule, `orchestrator.pareto.knee`),
so the first row is the knee. The confirmation stage takes its top K from here and promote its pick.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from orchestrator import pareto


def ranked(finished: pl.DataFrame, objectives: Mapping[str, str]) -> list[dict[str, Any]]:
    """Rows with a value for every objective, best first (see the module docstring); rows without one are left out."""
    metrics = list(objectives)
    rows = finished.drop_nulls(metrics).filter(pl.all_horizontal([pl.col(m).cast(pl.Float64).is_not_nan() for m in metrics]))
    if len(objectives) == 1:
        (metric, mode), = objectives.items()
        return rows.sort(metric, descending=mode == "max", maintain_order=True).to_dicts()
    return by_fronts(rows, objectives)


def by_fronts(finished: pl.DataFrame, objectives: Mapping[str, str]) -> list[dict[str, Any]]:
    """Non-dominated sorting: front by front, each ordered by distance to utopia (the knee's rule)."""
    ordered: list[dict[str, Any]] = []
    rest = finished
    while not rest.is_empty():
        front = pareto.pareto_front(rest, objectives)
        distance = np.linalg.norm(1.0 - pareto.normalised(front, objectives), axis=1)
        rows = [front.row(int(i), named=True) for i in np.argsort(distance, kind="stable")]
        if not ordered:  # the first is the knee by construction; keep knee() the one definition of it
            assert rows[0]["trial_id"] == pareto.knee(front, objectives)["trial_id"]
        ordered += rows
        rest = rest.filter(~pl.col("trial_id").is_in(front["trial_id"].implode()))
    return ordered
