"""Hand-made sweeps for the promote tests: a run folder as the sweep leaves it, without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from mlflow.tracking import MlflowClient
from sweep_helpers import write_spec

from orchestrator.promote.cli import main
from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec, spec_hash

# (trial, status, t2i_score, edit_score): b is the knee; d is dominated by b; f would dominate
# everything but was stopped early, e failed without metrics.
TRIALS = [
    ("a", "FINISHED", 0.9, 0.1),
    ("b", "FINISHED", 0.6, 0.6),
    ("c", "FINISHED", 0.1, 0.9),
    ("d", "FINISHED", 0.5, 0.5),
    ("e", "FAILED", None, None),
    ("f", "STOPPED", 0.95, 0.95),
]


def trials_table(trials=TRIALS) -> pl.DataFrame:
    """trials.parquet of `trials`: t2i_edit_ratio 0.1, 0.2, ... in order, score the mean of the two."""
    return pl.DataFrame(
        {
            "trial_id": [t[0] for t in trials],
            "status": [t[1] for t in trials],
            "t2i_edit_ratio": [0.1 * (i + 1) for i in range(len(trials))],
            "t2i_score": [t[2] for t in trials],
            "edit_score": [t[3] for t in trials],
            "score": [None if t[2] is None else (t[2] + t[3]) / 2 for t in trials],
            "mlflow_run_id": [f"run-{t[0]}" for t in trials],
        }
    )


def fake_sweep(folder: Path, checkpoints: Path, trials=TRIALS, **sections) -> tuple[Path, Path]:
    """(run folder, spec path): sweep.json and the tables of a micro sweep named `micro`."""
    spec_path = write_spec(folder, checkpoints, **sections)
    run = RunDir(folder / "runs" / "micro")
    run.path.mkdir(parents=True)
    marker = {"sweep_id": "sweep-1", "spec_hash": spec_hash(load_spec(spec_path)), "name": "micro"}
    run.marker.write_text(json.dumps(marker))
    table = trials_table(trials)
    for path, frame in zip(run.tables, (table, table.clear(), table.clear()), strict=True):
        frame.write_parquet(path)
    return run.path, spec_path


def ids(rows) -> list[str]:
    return [r["trial_id"] for r in rows]


def run_main(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m orchestrator.promote *argv`, run in this process."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# -- the micro sweep (conftest's `micro_sweep`): a real one -----------------------------------------


def micro(spec_path: Path) -> tuple[Path, str, MlflowClient]:
    """(run folder, MLflow URI, client) of the micro sweep whose spec is `spec_path`."""
    uri = f"sqlite:///{spec_path.parent / 'mlflow.db'}"
    return spec_path.parent / "runs" / "micro", uri, MlflowClient(uri)


def versions(client: MlflowClient) -> list:
    return client.search_model_versions("name = 'micro-student'")


def runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("micro")
    return client.search_runs([experiment.experiment_id], max_results=1000)
