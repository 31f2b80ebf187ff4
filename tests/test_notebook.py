"""notebooks/pareto_fronts.ipynb is its builder's output and runs headless, drawing a figure per swept axis.

    .venv/bin/python -m pytest tests/test_notebook.py -q          # the run on a real micro sweep is marked slow

The notebook runs with nbclient on the venv's python3 kernel from the repo root, its parameters cell
replaced in memory to point at a run dir: a hand-built one varying every axis of the registry, or the
`micro_sweep` fixture's (a task-ratio sweep). The figures expected follow orchestrator/axes.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import polars as pl
import pytest
from axis_frames import assert_images, run_dir_varying_every_axis
from nbclient import NotebookClient

from orchestrator import axes, effects

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "pareto_fronts.ipynb"


def builder():
    spec = importlib.util.spec_from_file_location("build_pareto_fronts", ROOT / "notebooks" / "build_pareto_fronts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(run_dir: Path, out_dir: Path) -> list:
    """The notebook's code cells after running it on `run_dir`, saving its PNGs in `out_dir`."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells[0].source = f"run_dir = {str(run_dir)!r}\nout_dir = {str(out_dir)!r}\nobjectives = None"
    NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(ROOT)}}).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    return code


def expected_figures(trials: pl.DataFrame) -> tuple[list[str], list[axes.Axis]]:
    """The figures the notebook draws for these trials (every fixed one applies), and the axes it skips."""
    done = effects.finished(trials)
    swept = [a for a in axes.analysed() if a.swept(done)]
    names = ["front", "hypervolume", *(a.plot.name for a in swept), "learning_curves", "knee_samples"]
    return names, [a for a in axes.analysed() if a not in swept]


def check_outputs(code: list, out_dir: Path, trials: pl.DataFrame) -> None:
    drawn, skipped = expected_figures(trials)
    shown = [o for cell in code for o in cell.outputs if "image/png" in o.get("data", {})]
    assert len(shown) == len(drawn)  # each figure displayed once
    assert_images([out_dir / f"{name}.png" for name in drawn])
    assert sorted(p.stem for p in out_dir.glob("*.png")) == sorted(drawn)
    text = "".join(o.get("text", "") for cell in code for o in cell.outputs)
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for cell in code for o in cell.outputs)
    for axis in axes.analysed():
        if axis in skipped:  # a figure whose axis the sweep did not vary is skipped, saying so
            assert f"{axis.plot.name}: skipped, {axis.field} was not swept" in text
            assert axis.plot.heading not in markdown
        else:  # its section: the words on it and its effect table
            assert f"### {axis.plot.heading}" in markdown


def test_committed_notebook_has_no_outputs_and_a_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert 'run_dir = "runs/task_ratio"' in first.source


def test_committed_notebook_is_the_builders_output():
    assert nbformat.writes(builder().build()) + "\n" == NOTEBOOK.read_text()


def test_the_notebook_names_no_axis_it_loops_over_the_registry():
    source = "".join(cell.source for cell in nbformat.read(NOTEBOOK, as_version=4).cells if cell.cell_type == "code")
    assert "axes.analysed()" in source
    assert not [field for field in axes.AXES if field in source]


def test_notebook_runs_on_a_run_dir_varying_every_axis(tmp_path):
    run_dir, out_dir = run_dir_varying_every_axis(tmp_path), tmp_path / "figures"
    trials = pl.read_parquet(run_dir / "trials.parquet").with_columns(  # as evaluations report them now
        pl.lit(0.03).alias("t2i_score_se"), pl.lit(0.03).alias("edit_score_se"))
    trials.write_parquet(run_dir / "trials.parquet")
    (run_dir / "reference.json").write_text(json.dumps(
        {"t2i_score": 0.3, "edit_score": 0.3, "source": {"t2i_score": "teacher@4", "edit_score": "teacher@4"}}))
    code = run(run_dir, out_dir)
    check_outputs(code, out_dir, trials)
    (table,) = [o["data"]["text/plain"] for cell in code if "noise_table" in cell.source for o in cell.outputs]
    assert "not_clearly_dominated" in table and "on_front" in table and " ± 0.030" in table


@pytest.mark.slow
def test_notebook_runs_on_a_sweep_and_saves_its_figures(micro_sweep, tmp_path):
    run_dir, out_dir = micro_sweep.parent / "runs" / "micro", tmp_path / "figures"
    code = run(run_dir, out_dir)
    trials = pl.read_parquet(run_dir / "trials.parquet")
    check_outputs(code, out_dir, trials)
    assert expected_figures(trials)[1]  # the micro sweep varies only the ratio: some figures are skipped
