"""A sweep's tables (orchestrator/results.py): built from the run folder, written, read back, from MLflow.

Run: .venv/bin/python -m pytest tests/test_results.py -q
The loaders run on the shared `micro_sweep` fixture (one real micro sweep per test session).
"""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
import pytest
import yaml

from orchestrator import results
from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec


def _objectives(*pairs: tuple[str, str]) -> SimpleNamespace:
    """What `pareto_front` reads of a spec: its objectives."""
    return SimpleNamespace(objectives=[SimpleNamespace(metric=m, mode=mode) for m, mode in pairs])


def test_pareto_front_flips_minimised_objectives_and_keeps_finished_trials():
    trials = pl.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"],
        "status": ["FINISHED", "FINISHED", "FINISHED", "FAILED", "STOPPED"],
        "fd": [1.0, 2.0, 3.0, 0.0, 0.5],
        "diversity": [0.5, 0.9, 0.4, 1.0, 1.0],
    })
    spec = _objectives(("fd", "min"), ("diversity", "max"))
    assert results.pareto_front(trials, spec)["trial_id"].to_list() == ["a", "b"]  # c is dominated by a
    assert results.pareto_front(trials.drop("fd"), spec).is_empty()  # an objective no trial has
    assert results.pareto_front(trials.clear(), spec).columns == trials.columns


def test_in_start_order_sorts_by_start_then_id_with_older_tables_by_id():
    trials = pl.DataFrame({"trial_id": ["c", "a", "b", "d"], "started_at": [2.0, 2.0, 1.0, None]})
    assert results.in_start_order(trials)["trial_id"].to_list() == ["b", "a", "c", "d"]
    assert results.in_start_order(trials.drop("started_at"))["trial_id"].to_list() == ["a", "b", "c", "d"]


def test_written_tables_read_back_the_same(tmp_path):
    trials = pl.DataFrame({"trial_id": ["a", "b"], "status": ["FINISHED", "FAILED"], "score": [0.5, None]})
    curves = pl.DataFrame({"trial_id": ["a", "a"], "step": [2.0, 4.0], "score": [0.2, 0.5]})
    tables = results.Tables(trials, curves, trials.head(1))
    paths = results.write(tmp_path, tables)
    assert paths == RunDir(tmp_path).tables
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.parquet", "pareto.parquet", "trials.parquet"]
    back = results.load_sweep(tmp_path)  # no .tmp file left beside them either
    assert back.trials.equals(trials) and back.curves.equals(curves) and back.pareto.equals(trials.head(1))


def test_load_sweep_says_what_is_missing(tmp_path):
    pl.DataFrame({"trial_id": ["a"]}).write_parquet(RunDir(tmp_path).trials)
    with pytest.raises(results.MissingResultsError, match=r"curves\.parquet, .*pareto\.parquet not found.*--resume"):
        results.load_sweep(tmp_path)


def test_mlflow_params_become_numbers_only_when_all_are():
    assert results._numeric(pl.Series(["1", "2.5", None])).to_list() == [1.0, 2.5, None]
    assert results._numeric(pl.Series(["1", "text"])).to_list() == ["1", "text"]


# -- on a real sweep ------------------------------------------------------------------------------


def test_results_pareto_front_ignores_unfinished_trials(micro_sweep):
    spec = load_spec(micro_sweep)
    trials = pl.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "status": ["FINISHED", "STOPPED", "FINISHED"],
            "t2i_score": [0.5, 0.9, 0.4],
            "edit_score": [0.5, 0.9, 0.4],
        }
    )
    assert results.pareto_front(trials, spec)["trial_id"].to_list() == ["a"]


def test_load_sweep_reads_the_tables(micro_sweep):
    run = RunDir(micro_sweep.parent / "runs" / "micro")
    tables = results.load_sweep(run.path)
    assert tables.trials.equals(pl.read_parquet(run.trials))
    assert set(tables.pareto["trial_id"]) <= set(tables.trials["trial_id"])
    assert set(tables.curves["trial_id"]) <= set(tables.trials["trial_id"])
    started = results.in_start_order(tables.trials)["started_at"].to_list()
    assert started == sorted(started) and None not in started


def test_the_tables_can_be_rebuilt_from_the_run_folder_alone(micro_sweep):
    run = RunDir(micro_sweep.parent / "runs" / "micro")
    written = results.load_sweep(run.path)
    run_ids = dict(written.trials.select("trial_id", "mlflow_run_id").iter_rows())
    again = results.collect(run.path, load_spec(micro_sweep), run_ids)
    assert again.trials.equals(written.trials) and again.curves.equals(written.curves)
    assert again.pareto.equals(written.pareto)
    columns = ["trial_id", "status", "started_at", "error", "t2i_edit_ratio"]
    assert written.trials.columns[:5] == columns
    assert {"t2i_score", "edit_score", "score", "step", "reports", "wall_s", "mlflow_run_id"} <= set(written.trials.columns)
    assert written.curves.columns[:2] == ["trial_id", "time_total_s"] and "step" in written.curves.columns


def test_sweep_objectives_come_from_the_spec_kept_in_the_run_dir(micro_sweep, tmp_path):
    assert results.sweep_objectives(tmp_path) is None
    spec = yaml.safe_load(micro_sweep.read_text())
    spec["objectives"] = [{"metric": "score", "mode": "max"}, {"metric": "fd", "mode": "min"}]
    RunDir(tmp_path).spec.write_text(yaml.safe_dump(spec))
    assert results.sweep_objectives(tmp_path) == {"score": "max", "fd": "min"}


def test_load_mlflow_matches_the_trials_table(micro_sweep):
    folder = micro_sweep.parent
    run = RunDir(folder / "runs" / "micro")
    trials = pl.read_parquet(run.trials)
    mlflow_trials = results.load_mlflow(f"sqlite:///{folder / 'mlflow.db'}", "micro")
    assert sorted(mlflow_trials["trial_id"]) == sorted(trials["trial_id"])
    joined = trials.join(mlflow_trials, on="trial_id", suffix="_mlflow")
    assert joined["t2i_edit_ratio"].to_list() == pytest.approx(joined["t2i_edit_ratio_mlflow"].to_list())
    assert joined["t2i_score"].to_list() == pytest.approx(joined["t2i_score_mlflow"].to_list())
    assert joined["status"].to_list() == joined["status_mlflow"].to_list()
    assert joined["mlflow_run_id"].to_list() == joined["mlflow_run_id_mlflow"].to_list()
    assert mlflow_trials["steps"].dtype == pl.Float64  # numeric params become floats
    sweep_id = run.record()["sweep_id"]
    same = results.load_mlflow(f"sqlite:///{folder / 'mlflow.db'}", "micro", sweep_id=sweep_id)
    assert same["trial_id"].to_list() == mlflow_trials["trial_id"].to_list()
    assert results.load_mlflow(f"sqlite:///{folder / 'mlflow.db'}", "micro", sweep_id="other").is_empty()


def test_load_mlflow_names_an_unknown_experiment(micro_sweep):
    uri = f"sqlite:///{micro_sweep.parent / 'mlflow.db'}"
    with pytest.raises(results.MissingResultsError, match="no MLflow experiment named 'nope'"):
        results.load_mlflow(uri, "nope")
