"""Resume after the driver is killed: `python -m orchestrator.sweep SPEC --resume` finishes the sweep.

Run: .venv/bin/python -m pytest tests/test_resume.py -q
The sweep runs as a real subprocess (its own local Ray). The finish gate (orchestrator/gate.py)
lets exactly two trials finish; it gets SIGKILL, with its Ray, once the state snapshot records those
two as finished while others wait at the gate, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from sweep_helpers import mlflow_runs, write_spec

from benchmarks.kill_soak import kill_group
from orchestrator import gate
from orchestrator.search.dedup import DedupOptunaSearch

ROOT = Path(__file__).parent.parent
pytestmark = pytest.mark.slow


def _sweep(spec: Path, *flags: str, finish_gate: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", "RAY_ADDRESS": ""}
    env.pop(gate.ENV, None)
    if finish_gate is not None:
        env[gate.ENV] = str(finish_gate)
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


def snapshot_status(run_dir: Path) -> dict[str, str]:
    """trial id -> status in the sweep's last experiment-state snapshot (what --resume will see)."""
    statuses: dict[str, str] = {}
    for path in run_dir.glob("experiment_state-*.json"):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):  # being replaced right now: read it next time
            continue
        for trial_json, _ in data.get("trial_data", []):
            state = json.loads(trial_json)
            statuses[state["trial_id"]] = state["status"]
    return statuses


def wait_for(condition, what: str, proc: subprocess.Popen) -> None:
    """Until `condition()` holds; the sweep exiting first is a failure that shows its output."""
    if not gate.wait_until(condition, what, alive=lambda: proc.poll() is None):
        raise AssertionError(f"the sweep exited ({proc.returncode}) before {what}:\n{proc.communicate()[0]}")


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
    held = tmp_path / "gate"
    gate.let_through(held, 2)  # two trials may finish; the rest wait before their final report
    first = _sweep(spec, finish_gate=held)

    def two_known_finished_and_one_held() -> bool:
        terminated = {t for t, status in snapshot_status(run_dir).items() if status == "TERMINATED"}
        return len(terminated) >= 2 and len(gate.waiting(held) - gate.passed(held)) >= 1

    wait_for(two_known_finished_and_one_held, "snapshot with two finished trials and one held", first)
    done_before = {t for t, status in snapshot_status(run_dir).items() if status == "TERMINATED"}
    kill_group(first)  # the driver with its local Ray (its process group)
    assert done_before == gate.passed(held) == _finished_trials(run_dir) and len(done_before) == 2

    again = _sweep(spec)  # without --resume: refused, and says which flag to use
    out, _ = again.communicate(timeout=300)  # a hang guard only
    assert again.returncode == 1 and "--resume" in out and "--fresh" in out

    resumed = _sweep(spec, "--resume")
    out, _ = resumed.communicate(timeout=600)  # a hang guard only
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


def test_sigkill_in_the_confirmation_stage_then_resume_loses_and_repeats_no_run(tmp_path, micro_checkpoints):
    """Killed while the confirmation runs: --resume skips the finished search, keeps the confirmation
    run that finished, finishes the rest, and MLflow holds one run per planned (trial, seed)."""
    spec = write_spec(tmp_path, micro_checkpoints, scheduler=None, budget={"trials": 3, "concurrent": 2},
                      confirm={"top": 2, "seeds": 2})
    run_dir, confirm_dir = tmp_path / "runs" / "micro", tmp_path / "runs" / "micro" / "confirm"
    held = tmp_path / "gate"
    gate.let_through(held, 3 + 1)  # every search trial, then one confirmation run; the rest wait
    first = _sweep(spec, finish_gate=held)

    def one_confirmed_and_one_held() -> bool:
        terminated = [t for t, status in snapshot_status(confirm_dir).items() if status == "TERMINATED"]
        return len(terminated) >= 1 and len(gate.waiting(held) - gate.passed(held)) >= 1

    wait_for(one_confirmed_and_one_held, "a confirmation snapshot with one run finished and one held", first)
    confirmed_before = {t for t, status in snapshot_status(confirm_dir).items() if status == "TERMINATED"}
    kill_group(first)
    plan = json.loads((run_dir / "confirm_plan.json").read_text())["configs"]
    assert len(plan) == 4 and len(confirmed_before) == 1

    resumed = _sweep(spec, "--resume")
    out, _ = resumed.communicate(timeout=600)  # a hang guard only
    assert resumed.returncode == 0, out
    assert "verdict:" in out
    trials = pl.read_parquet(run_dir / "trials.parquet")
    assert trials.height == 3 and set(trials["status"]) == {"FINISHED"} and set(trials["reports"]) == {2}  # not re-run
    runs = pl.read_parquet(run_dir / "confirm.parquet")
    planned = sorted((c["confirm_of"], c["seed"]) for c in plan)
    assert sorted(zip(runs["confirm_of"], runs["seed"], strict=True)) == planned  # none lost, none twice
    assert set(runs["status"]) == {"FINISHED"}
    before = runs.filter(pl.col("trial_id").is_in(list(confirmed_before)))
    assert before.height == 1 and before["reports"].item() == 2  # the run confirmed before the kill did not re-run

    parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "micro")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    confirm_runs = [r for r in children if r.data.tags.get("stage") == "confirm"]
    assert sorted(r.data.tags["trial_id"] for r in confirm_runs) == sorted(runs["trial_id"])
    assert sorted((r.data.tags["confirm_of"], int(r.data.params["seed"])) for r in confirm_runs) == planned
    assert all(r.info.status == "FINISHED" for r in children) and len(children) == 3 + 4
