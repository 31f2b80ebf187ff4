"""notebooks/pareto_fronts.ipynb runs headless on a real sweep, and orchestrator.plots draws every figure.

    .venv/bin/python -m pytest tests/test_notebook.py -q          # the notebook run is marked slow

The notebook runs with nbclient on the venv's python3 kernel from the repo root, its parameters cell
replaced in memory to point at the `micro_sweep` fixture's run dir (a task-ratio sweep).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import polars as pl
import pytest
from nbclient import NotebookClient
from PIL import Image

from orchestrator import plots

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "pareto_fronts.ipynb"


def assert_images(paths: list[Path]) -> None:
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0, path
        with Image.open(path) as image:
            image.verify()  # a complete, decodable PNG
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) >= 100


def test_committed_notebook_has_no_outputs_and_a_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert 'run_dir = "runs/task_ratio"' in first.source


@pytest.mark.slow
def test_notebook_runs_on_a_sweep_and_saves_its_figures(micro_sweep, tmp_path):
    run_dir, out_dir = micro_sweep.parent / "runs" / "micro", tmp_path / "figures"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells[0].source = (
        f"run_dir = {str(run_dir)!r}\nout_dir = {str(out_dir)!r}\nobjectives = None"
    )
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(ROOT)}}).execute()

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    shown = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    drawn = ["front", "hypervolume", "score_vs_ratio", "learning_curves", "knee_samples"]
    assert len(shown) == len(drawn)  # each figure displayed once
    assert_images([out_dir / f"{name}.png" for name in drawn])
    # the micro sweep varies only the ratio: the other axes' figures are skipped, saying so
    assert sorted(p.stem for p in out_dir.glob("*.png")) == sorted(drawn)
    text = "".join(o.get("text", "") for cell in code for o in cell.outputs)
    assert "score_vs_category: skipped, category_mix was not swept" in text
    assert "score_vs_switch: skipped, teacher_switch_step was not swept" in text


def joint_run_dir(folder: Path) -> Path:
    """A run dir whose tables vary every axis (what a joint sweep writes), with one sample grid per trial."""
    rng = np.random.default_rng(0)
    n = 12
    mix = rng.dirichlet([1, 1, 1], n)
    ratio = np.round(rng.integers(1, 10, n) / 10, 1)
    t2i, edit = 0.3 + 0.4 * ratio + rng.normal(0, 0.02, n), 0.7 - 0.4 * ratio + rng.normal(0, 0.02, n)
    trials = pl.DataFrame(
        {
            "trial_id": [f"t{i:02d}" for i in range(n)],
            "status": ["FINISHED"] * (n - 2) + ["STOPPED", "FAILED"],
            "started_at": np.arange(n, dtype=float),
            "teacher_switch_step": rng.integers(0, 5, n),
            "t2i_edit_ratio": ratio,
            **{f"category_mix.{c}": mix[:, i] for i, c in enumerate(["landscape", "portrait", "text"])},
            "t2i_score": t2i,
            "edit_score": edit,
            "score": (t2i + edit) / 2,
        }
    )
    curves = pl.DataFrame(
        [{"trial_id": t, "step": float(s), "t2i_score": a * s / 4, "edit_score": b * s / 4, "score": (a + b) * s / 8}
         for t, a, b in zip(trials["trial_id"], t2i, edit, strict=True) for s in (2, 4)]
    )
    run_dir = folder / "runs" / "joint"
    for trial_id in trials["trial_id"]:
        checkpoint = run_dir / f"trial_{trial_id}" / "checkpoint_000001"
        checkpoint.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (128, 256, 3), dtype=np.uint8)).save(checkpoint / "samples.png")
    trials.write_parquet(run_dir / "trials.parquet")
    curves.write_parquet(run_dir / "curves.parquet")
    trials.head(0).write_parquet(run_dir / "pareto.parquet")  # the figures compute the front themselves
    return run_dir


def test_save_all_draws_every_figure_when_every_axis_was_swept(tmp_path):
    run_dir = joint_run_dir(tmp_path)
    paths = plots.save_all(run_dir, tmp_path / "figures")
    names = ["front", "hypervolume", "score_vs_ratio", "score_vs_category", "score_vs_switch",
             "learning_curves", "knee_samples"]
    assert [p.stem for p in paths] == names
    assert_images(paths)
    fig = plots.front_by_axis(pl.read_parquet(run_dir / "trials.parquet"))
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [
        "coloured by t2i_edit_ratio", "coloured by category_mix", "coloured by teacher_switch_step"
    ]


def test_plots_look_for_the_sample_grid_the_trial_writes():
    from orchestrator.trial import SAMPLES_FILE

    assert plots.SAMPLES_FILE == SAMPLES_FILE


def test_plots_skip_what_a_sweep_did_not_vary(tmp_path):
    trials = pl.DataFrame({"trial_id": ["a", "b"], "status": ["FINISHED"] * 2, "t2i_edit_ratio": [0.5, 0.5],
                           "t2i_score": [0.1, 0.2], "edit_score": [0.2, 0.1], "score": [0.15, 0.15]})
    assert plots.front_by_axis(trials) is None  # nothing varied: nothing to colour by
    assert plots.score_vs_ratio(trials) is None
    assert plots.score_vs_category(trials) is None
    assert plots.score_vs_switch(trials) is None
    assert plots.knee_samples(tmp_path, trials) is None  # no trial folder, no sample grid
    assert plots.hypervolume_curve(trials) is not None
