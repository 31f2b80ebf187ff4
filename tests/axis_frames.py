"""Hand-built trials tables and run dirs for the axis tests (effects, plots, notebook): no sweep runs.

`varying(axis, rng, n)` gives columns that vary one registry axis the way a sweep would, so
`run_dir_varying_every_axis` follows the registry: a new entry in orchestrator/axes.py is swept there
without touching this file. `assert_images` checks the PNGs the figures were saved as.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from orchestrator import axes
from orchestrator.axes import Axis
from orchestrator.rundir import RunDir

CATEGORIES = ("landscape", "portrait", "text")


def varying(axis: Axis, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Columns of `n` trials varying `axis`: a mix's weights, a share on the 0.1 grid, small integers, or floats."""
    if axis.mix:
        mix = rng.dirichlet([1] * len(CATEGORIES), n)
        return {f"{axis.field}.{c}": mix[:, i] for i, c in enumerate(CATEGORIES)}
    if isinstance(axis.groups, axes.Buckets):
        return {axis.field: np.round(rng.integers(1, 10, n) / 10, 1)}
    if isinstance(axis.groups, axes.Distinct):
        return {axis.field: rng.integers(1, 5, n)}
    return {axis.field: rng.uniform(0.3, 1.0, n)}


def trials_varying_every_axis(n: int = 12, seed: int = 0) -> pl.DataFrame:
    """Trials (the last two stopped and failed) varying every registry axis, with T2I traded against Edit."""
    rng = np.random.default_rng(seed)
    t2i = rng.uniform(0.3, 0.7, n)
    edit = 1.0 - t2i + rng.normal(0, 0.02, n)
    columns = {k: v for axis in axes.AXES.values() for k, v in varying(axis, rng, n).items()}
    return pl.DataFrame(
        {
            "trial_id": [f"t{i:02d}" for i in range(n)],
            "status": ["FINISHED"] * (n - 2) + ["STOPPED", "FAILED"],
            "started_at": np.arange(n, dtype=float),
            **columns,
            "t2i_score": t2i,
            "edit_score": edit,
            "score": (t2i + edit) / 2,
        }
    )


def run_dir_varying_every_axis(folder: Path) -> Path:
    """A run dir (what a joint sweep writes) whose trials vary every registry axis, one sample grid per trial."""
    rng = np.random.default_rng(1)
    trials = trials_varying_every_axis()
    curves = pl.DataFrame(
        [{"trial_id": t, "step": float(s), "t2i_score": a * s / 4, "edit_score": b * s / 4, "score": (a + b) * s / 8}
         for t, a, b in zip(trials["trial_id"], trials["t2i_score"], trials["edit_score"], strict=True)
         for s in (2, 4)]
    )
    run = RunDir(folder / "runs" / "joint")
    for trial_id in trials["trial_id"]:
        checkpoint = run.trial(trial_id) / "checkpoint_000001"  # as Tune names a trial's first checkpoint
        checkpoint.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (128, 256, 3), dtype=np.uint8)).save(RunDir.samples_in(checkpoint))
    trials.write_parquet(run.trials)
    curves.write_parquet(run.curves)
    trials.head(0).write_parquet(run.pareto)  # the figures compute the front themselves
    return run.path


def assert_images(paths: list[Path]) -> None:
    """Each path is a complete PNG of a real figure (at least 100 px a side)."""
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0, path
        with Image.open(path) as image:
            image.verify()  # a complete, decodable PNG
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 100
