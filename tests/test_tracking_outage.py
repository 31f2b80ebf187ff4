"""The MLflow server goes away mid-sweep: training goes on, and MLflow gets every write once it is back.

Run: .venv/bin/python -m pytest tests/test_tracking_outage.py -q
A real `mlflow server` (tests/mlflow_server.py) is stopped while trials run and started again on the
same port over the same store. The order of events is made certain with the finish gate
(orchestrator/gate.py: every trial holds before its final report until let through), not by timing;
the one sleep is the outage itself, which lasts at least OUTAGE_S.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import ray
from mlflow.tracking import MlflowClient
from mlflow_server import ServerProcess
from sweep_helpers import MICRO_BASE, mlflow_runs, write_spec

from orchestrator import gate
from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec
from orchestrator.sweep.engine import run_sweep
from orchestrator.tracking import outbox

ROOT = Path(__file__).parent.parent
OUTAGE_S = 10.0
pytestmark = pytest.mark.slow


def _spec(folder: Path, checkpoints: Path, url: str, trials: int) -> Path:
    """A micro sweep against the server at `url`: FIFO, 3 reports per trial (steps 2, 4, 6)."""
    return write_spec(
        folder, checkpoints, base={**MICRO_BASE, "steps": 6}, scheduler=None,
        budget={"trials": trials, "concurrent": 2}, tracking={"uri": url},
    )


def _wait(condition: Callable[[], bool], what: str, alive: Callable[[], bool]) -> None:
    assert gate.wait_until(condition, what, alive), f"the sweep ended before {what}"


def _a_report_logged(url: str) -> bool:
    """Whether some trial's run in the server has a metric (the tracker delivered a report)."""
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("micro")
    if experiment is None:
        return False
    return bool(client.search_runs([experiment.experiment_id], "tags.role = 'trial' and metrics.step > 0"))


def _kept(run_dir: Path) -> list[dict]:
    return outbox.read_journal(RunDir(run_dir).journal)


def check_mlflow_matches_tables(url: str, run_dir: Path, trials_expected: int) -> None:
    """One parent and one child run per trial, FINISHED, with params, artifacts and every report:
    each metric's history in MLflow is that trial's curves.parquet column, step by step."""
    trials = pl.read_parquet(run_dir / "trials.parquet")
    curves = pl.read_parquet(run_dir / "curves.parquet")
    assert trials.height == trials_expected and set(trials["status"]) == {"FINISHED"}
    client = MlflowClient(url)
    parents, children = mlflow_runs(url, "micro")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert {"spec.yaml", "trials.parquet", "curves.parquet", "pareto.parquet"} <= {
        a.path for a in client.list_artifacts(parent)
    }
    ids = [run.data.tags["trial_id"] for run in children]
    assert sorted(ids) == sorted(trials["trial_id"]), "exactly one child run per trial"
    by_trial = {run.data.tags["trial_id"]: run for run in children}
    for row in trials.iter_rows(named=True):
        run = by_trial[row["trial_id"]]
        assert row["mlflow_run_id"] == run.info.run_id
        assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "finished"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert float(run.data.params["t2i_edit_ratio"]) == row["t2i_edit_ratio"] and run.data.params["steps"] == "6"
        assert {"recipe.yaml", "samples.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        mine = curves.filter(pl.col("trial_id") == row["trial_id"]).sort("step")
        assert mine["step"].to_list() == [2.0, 4.0, 6.0]
        keys = {c for c in mine.columns if c not in ("trial_id", "time_total_s") and mine[c].null_count() < mine.height}
        assert set(run.data.metrics) == keys
        for key in sorted(keys):
            expected = [(int(s), v) for s, v in zip(mine["step"], mine[key], strict=True) if v is not None]
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert logged == expected, (row["trial_id"], key)


@pytest.fixture()
def gated_ray(tmp_path, monkeypatch):
    """A local Ray (2 CPUs) whose trials hold at the finish gate `<tmp_path>/gate`."""
    folder = tmp_path / "gate"
    monkeypatch.setenv(gate.ENV, str(folder))  # before Ray starts: its workers inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield folder
    ray.shutdown()


def test_a_store_outage_mid_sweep_loses_and_duplicates_nothing(tmp_path, micro_checkpoints, gated_ray, capsys):
    (tmp_path / "store").mkdir()
    run_dir = tmp_path / "runs" / "micro"
    with ServerProcess(tmp_path / "store" / "mlflow.db") as server:
        server.start()
        spec = load_spec(_spec(tmp_path, micro_checkpoints, server.url, trials=3))
        ended: dict = {}

        def sweep() -> None:
            try:
                ended["outcome"] = run_sweep(spec, runs_dir=tmp_path / "runs")
            except BaseException as exc:  # re-raised by the test
                ended["error"] = exc

        thread = threading.Thread(target=sweep, daemon=True)
        thread.start()
        try:
            _wait(lambda: _a_report_logged(server.url), "first report in MLflow", thread.is_alive)
            server.stop()
            away = time.monotonic()
            _wait(lambda: len(gate.waiting(gated_ray)) == 2, "two trials at the gate", thread.is_alive)
            first_two = gate.waiting(gated_ray)
            gate.let_through(gated_ray, 1)  # one trial ends while the store is away, the third one starts
            _wait(lambda: len(gate.waiting(gated_ray)) == 3, "third trial at the gate", thread.is_alive)
            (third,) = gate.waiting(gated_ray) - first_two
            kept = _kept(run_dir)  # what the store has not seen: the third trial's run is yet to be made
            assert {"trial_start", "report", "trial_end"} <= {e["op"] for e in kept}, kept
            assert [e["step"] for e in kept if e["op"] == "report" and e["trial"] == third] == [2.0, 4.0]
            assert any(e["op"] == "trial_start" and e["trial"] == third for e in kept)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - away)))  # the outage lasts OUTAGE_S at least
            server.start()
        finally:
            gate.open_gate(gated_ray)
            thread.join(timeout=300)
        assert not thread.is_alive(), "the sweep did not end"
        if "error" in ended:
            raise ended["error"]

        shown = capsys.readouterr().out
        assert len([line for line in shown.splitlines() if f"MLflow store {server.url} is away (" in line]) == 1, shown
        assert len([line for line in shown.splitlines() if f"MLflow store {server.url} is back after" in line]) == 1
        assert not RunDir(run_dir).journal.exists() and not RunDir(run_dir).outbox_files.exists()
        check_mlflow_matches_tables(server.url, run_dir, trials_expected=3)
        assert ended["outcome"].experiment_id


def _sweep(spec: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", "RAY_ADDRESS": "", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", str(spec), *flags], cwd=spec.parent, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: the local Ray it starts goes with it
    )


def test_a_store_away_to_the_end_keeps_the_writes_for_resume(tmp_path, micro_checkpoints):
    (tmp_path / "store").mkdir()
    run_dir = tmp_path / "runs" / "micro"
    folder = tmp_path / "gate"
    with ServerProcess(tmp_path / "store" / "mlflow.db") as server:
        server.start()
        spec = _spec(tmp_path, micro_checkpoints, server.url, trials=2)
        first = _sweep(spec, env={gate.ENV: str(folder)})
        try:
            alive = lambda: first.poll() is None  # noqa: E731
            _wait(lambda: _a_report_logged(server.url), "first report in MLflow", alive)
            server.stop()
            _wait(lambda: len(gate.waiting(folder)) == 2, "two trials at the gate", alive)
        finally:
            gate.open_gate(folder)
        out, _ = first.communicate(timeout=300)
        assert first.returncode == 0, out

        # The sweep trained to the end and wrote its tables; its MLflow writes wait in the run dir.
        trials = pl.read_parquet(run_dir / "trials.parquet")
        assert trials.height == 2 and set(trials["status"]) == {"FINISHED"}
        assert pl.read_parquet(run_dir / "curves.parquet").height == 6
        kept = _kept(run_dir)
        assert {"trial_end", "sweep_end", "outputs"} <= {e["op"] for e in kept}
        assert len([line for line in out.splitlines() if f"MLflow store {server.url} is away (" in line]) == 1, out
        assert " is back after" not in out
        pending = re.search(r"^(\d+) MLflow writes pending in (\S+) \(", out, re.MULTILINE)
        assert pending and int(pending[1]) == len(kept) and pending[2] == str(RunDir(run_dir).journal), out
        assert f"is back: python -m orchestrator.sweep {spec} --resume\n" in out

        server.start()
        resumed = _sweep(spec, "--resume")
        again, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, again
        assert "MLflow writes pending" not in again
        assert not RunDir(run_dir).journal.exists() and not RunDir(run_dir).outbox_files.exists()
        check_mlflow_matches_tables(server.url, run_dir, trials_expected=2)
