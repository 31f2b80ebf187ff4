"""Resume after the driver is killed: `python -m orchestrator.sweep SPEC --resume` finishes the sweep.

Run: .venv/bin/python -m pytest tests/test_resume.py -q
The sweep runs as a real subprocess (its own local Ray); it gets SIGKILL once two trials finished.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from sweep_helpers import mlflow_runs, write_spec

from orchestrator.search import DedupOptunaSearch

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def _sweep(spec: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", "RAY_ADDRESS": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", str(spec), *flags],
        cwd=spec.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the local Ray it starts goes with it
    )


def _finished_trials(run_dir: Path) -> set[str]:
    done = set()
    for result in run_dir.glob("trial_*/result.json"):
        if any(json.loads(line).get("final") for line in result.read_text().splitlines() if line.strip()):
            done.add(result.parent.name.removeprefix("trial_"))
    return done


def test_sigkill_then_resume_completes_the_planned_sweep(tmp_path, micro_checkpoints):
    spec = write_spec(
        tmp_path,
        micro_checkpoints,
        base={"steps": 6, "report_every": 2, "batch_size": 4, "eval_items": 16, "eval_items_quick": 8,
              "critic_updates": 1, "warmup_steps": 0},
        scheduler=None,
        budget={"trials": 6, "concurrent": 2},
    )
    run_dir = tmp_path / "runs" / "micro"
    first = _sweep(spec)
    deadline = time.monotonic() + 150
    while len(_finished_trials(run_dir)) < 2:
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "two trials did not finish in time"
        time.sleep(0.2)
    done_before = _finished_trials(run_dir)
    time.sleep(2.5)  # the sweep snapshots its state every second: these trials are now known finished
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1)
    try:  # what is left of the killed driver's local Ray
        os.killpg(first.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert len(done_before) >= 2 and len(_finished_trials(run_dir)) < 6

    again = _sweep(spec)  # without --resume: refused, and says which flag to use
    out, _ = again.communicate(timeout=60)
    assert again.returncode == 1 and "--resume" in out and "--fresh" in out

    resumed = _sweep(spec, "--resume")
    out, _ = resumed.communicate(timeout=170)
    assert resumed.returncode == 0, out
    trials = pl.read_parquet(run_dir / "trials.parquet")
    assert trials.height == 6 and trials["trial_id"].n_unique() == 6
    assert set(trials["status"]) == {"FINISHED"}
    assert done_before <= set(trials["trial_id"])
    for row in trials.filter(pl.col("trial_id").is_in(list(done_before))).iter_rows(named=True):
        assert row["reports"] == 3, f"finished trial {row['trial_id']} re-ran"

    parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "micro")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(run.data.tags["trial_id"] for run in children) == sorted(trials["trial_id"])
    assert all(run.info.status == "FINISHED" for run in children)

    # The Optuna study came back whole (Ray bug #30861 lost it): one Optuna trial per Tune trial,
    # each with the params its Tune trial ran with (plus repeated proposals answered without a run).
    searcher = DedupOptunaSearch()
    searcher.restore_from_dir(str(run_dir))
    ran = [t for t in searcher._ot_study.trials if "duplicate_of" not in t.user_attrs]
    assert len(ran) == 6 and len(searcher._seen) == 6
    for row in trials.iter_rows(named=True):
        # (the sweep shows stepped draws rounded: Optuna keeps lo + k·step with its float noise)
        assert searcher._ot_trials[row["trial_id"]].params["t2i_edit_ratio"] == pytest.approx(row["t2i_edit_ratio"], abs=1e-9)
