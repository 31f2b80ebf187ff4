"""Kill soak: SIGKILL the sweep driver with its local Ray at random moments, resume, and count what was lost.

    python -m benchmarks.kill_soak --kills 10 [--trials 16] [--steps 10] [--seed 0] [--folder DIR]

A micro sweep (micro teachers, micro pools, FIFO so every trial runs to its end) is started as
`python -m orchestrator.sweep SPEC` in its own process group. K times, after a random number of new
trial reports (0-2) and a random extra delay (0-1 s), the whole group (driver + Ray) gets SIGKILL
and the sweep is restarted with `--resume`, until it ends by itself. Then the invariants:

- trials.parquet: every planned trial FINISHED, exactly once;
- curves.parquet: no (trial, step) row twice;
- MLflow: one parent run, exactly one FINISHED child run per trial (lost runs are in the trash);
- the Optuna study: every trial once (repeats answered inside Optuna are tagged and not counted).

Then a trial's *worker* (not the driver) is killed mid-trial: a fresh one-trial sweep whose trial is
held before its final report by the finish gate (orchestrator/gate.py), its worker process SIGKILLed,
the gate opened; the trial must continue from its last checkpoint and finish.

Prints one JSON line: kills, trials, lost, duplicated, wall_s, and the worker kill's resume step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from orchestrator import gate
from orchestrator.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
HANG_S = 900  # a bound that only turns a hung sweep into an error

MICRO_BASE = {"steps": 6, "report_every": 2, "batch_size": 4, "eval_items": 16, "eval_items_quick": 8,
              "critic_updates": 1, "warmup_steps": 0}


def write_spec(folder: Path, checkpoints: Path, name: str, trials: int, steps: int = 6) -> Path:
    """A micro task-ratio sweep: FIFO, NSGA-II, `trials` trials, 2 at a time, sqlite store in `folder`."""
    from trainers.tinyworld.pretrain import MICRO_WORLD

    spec = {
        "name": name,
        "world": {"name": "tiny", "checkpoints": str(checkpoints), **MICRO_WORLD},
        "base": {**MICRO_BASE, "steps": steps},
        "search": {"t2i_edit_ratio": {"float": [0.05, 0.95], "step": 0.05}},  # 19 points: room for the trials
        "objectives": [{"metric": "t2i_score", "mode": "max"}, {"metric": "edit_score", "mode": "max"}],
        "sampler": {"name": "nsga2", "seed": 0, "options": {"population_size": 4}},
        "budget": {"trials": trials, "concurrent": 2, "max_failures": 3},
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def start_sweep(spec: Path, *flags: str, finish_gate: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160", "RAY_ADDRESS": ""}
    env.pop(gate.ENV, None)
    if finish_gate is not None:
        env[gate.ENV] = str(finish_gate)
    log = open(spec.parent / f"{spec.stem}.console.log", "a")  # noqa: SIM115 -- the child keeps it
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.sweep", str(spec), *flags],
        cwd=spec.parent, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: the local Ray it starts goes with it
    )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its group (its raylet, GCS, workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def reports(run_dir: Path) -> list[dict[str, Any]]:
    """Every report in the trials' result.json files (the driver writes them as results arrive)."""
    out = []
    for path in RunDir(run_dir).result_files():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written right now
                pass
    return out


def wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> bool:
    """Poll `condition` until it holds (True) or `proc` exits (False)."""
    return gate.wait_until(condition, what, None if proc is None else (lambda: proc.poll() is None), HANG_S)


def soak(folder: Path, checkpoints: Path, kills: int, trials: int, seed: int, steps: int = 6) -> dict[str, Any]:
    """Run the kill loop and check the invariants; returns the counts."""
    rng = random.Random(seed)
    spec = write_spec(folder, checkpoints, "soak", trials, steps)
    run_dir = folder / "runs" / "soak"
    done, launches = 0, 0
    proc = start_sweep(spec)
    while True:
        launches += 1
        if done < kills:
            seen = len(reports(run_dir))
            wanted = seen + rng.randint(0, 2)  # 0: killed while it starts up or restores
            if wait_for(lambda w=wanted: len(reports(run_dir)) >= w, "new reports", proc):
                time.sleep(rng.uniform(0.0, 1.0))
                if proc.poll() is None:
                    kill_group(proc)
                    done += 1
                    proc = restart(spec, run_dir)
                    continue
        rc = proc.wait(timeout=HANG_S)
        if rc == 0:
            break
        if launches > kills + 5:
            raise RuntimeError(f"the sweep keeps failing (exit {rc}): see {spec.parent / 'soak.console.log'}")
        proc = restart(spec, run_dir)
    return {"kills": done, "launches": launches, **check_invariants(run_dir, f"sqlite:///{folder / 'mlflow.db'}", "soak", trials)}


def restart(spec: Path, run_dir: Path) -> subprocess.Popen:
    """What a user does after a crash: --resume, or a plain start if the killed one made no run dir yet."""
    return start_sweep(spec, "--resume") if RunDir(run_dir).marker.is_file() else start_sweep(spec)


def check_invariants(run_dir: Path, uri: str, name: str, planned: int) -> dict[str, Any]:
    """lost / duplicated counts over trials.parquet, curves.parquet, MLflow and the Optuna study."""
    import polars as pl
    from mlflow.tracking import MlflowClient

    from orchestrator.search.dedup import DedupOptunaSearch
    from orchestrator.tracking import outbox

    trials = pl.read_parquet(RunDir(run_dir).trials)
    curves = pl.read_parquet(RunDir(run_dir).curves)
    finished = trials.filter(pl.col("status") == "FINISHED")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("role") == "trial"]
    child_ids = [r.data.tags["trial_id"] for r in children if r.info.status == "FINISHED"]
    searcher = DedupOptunaSearch()
    searcher.restore_from_dir(str(run_dir))
    ran = [t for t in searcher._ot_study.trials if "duplicate_of" not in t.user_attrs]
    problems = {
        "trials_not_finished": planned - finished["trial_id"].n_unique(),
        "trial_rows_twice": trials.height - trials["trial_id"].n_unique(),
        "curve_rows_twice": curves.height - curves.select("trial_id", "step").n_unique(),
        "mlflow_parents_extra": len(parents) - 1,
        "mlflow_children_missing": len(set(finished["trial_id"]) - set(child_ids)),
        "mlflow_children_extra": len(children) - len(set(child_ids)) + len(set(child_ids) - set(trials["trial_id"])),
        "optuna_trials_missing": max(0, planned - len(ran)),
        "optuna_trials_extra": max(0, len(ran) - planned),
        "mlflow_steps_missing": _steps_missing(client, children, curves),
        # writes the tracker kept but never delivered (the store was up throughout: there should be none)
        "mlflow_writes_pending": len(outbox.read_journal(RunDir(run_dir).journal)),
    }
    lost = sum(problems[k] for k in ("trials_not_finished", "mlflow_children_missing", "optuna_trials_missing",
                                     "mlflow_steps_missing", "mlflow_writes_pending"))
    duplicated = sum(v for k, v in problems.items() if k.endswith(("twice", "extra")))
    return {"trials": planned, "lost": lost, "duplicated": duplicated, "problems": problems}


def _steps_missing(client: Any, children: list, curves: Any) -> int:
    """(trial, step) reports in curves.parquet that the trial's MLflow run has no `step` metric for."""
    missing = 0
    for run in children:
        if run.info.status != "FINISHED":
            continue
        logged = {m.step for m in client.get_metric_history(run.info.run_id, "step")}
        reported = curves.filter(curves["trial_id"] == run.data.tags["trial_id"])["step"].to_list()
        missing += len({int(s) for s in reported} - logged)
    return missing


def worker_kill(folder: Path, checkpoints: Path) -> dict[str, Any]:
    """Kill a held trial's worker process; the retry must resume from its checkpoint and finish."""
    import polars as pl

    spec = write_spec(folder, checkpoints, "worker_kill", trials=1, steps=8)
    run_dir = folder / "runs" / "worker_kill"
    held = folder / "worker_kill_gate"
    proc = start_sweep(spec, finish_gate=held)
    try:
        last_step = MICRO_BASE["report_every"] * 3  # steps 2, 4, 6 reported with checkpoints, 8 is final
        ok = wait_for(
            lambda: gate.waiting(held) and any(r.get("step") == last_step for r in reports(run_dir)),
            "trial held at the gate", proc,
        )
        if not ok:
            raise RuntimeError(f"the sweep ended before its trial reached the gate: {spec.parent / 'worker_kill.console.log'}")
        victim = next(r for r in reports(run_dir) if r.get("step") == last_step)
        os.kill(victim["pid"], signal.SIGKILL)
        gate.open_gate(held)
        rc = proc.wait(timeout=HANG_S)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    trials = pl.read_parquet(RunDir(run_dir).trials)
    after = [r for r in reports(run_dir) if r.get("pid") != victim["pid"]]
    resumed_at = min((r["step"] for r in after), default=None)
    return {
        "worker_kill_exit": rc,
        "worker_kill_status": trials["status"].to_list(),
        "worker_killed_at_step": victim["step"],
        # the first report after the kill: the checkpoint step + report_every when it resumed
        "worker_resumed_first_report_step": resumed_at,
        "worker_resumed_from_checkpoint": resumed_at is not None and resumed_at > MICRO_BASE["report_every"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kill_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="driver kills (default 10)")
    parser.add_argument("--trials", type=int, default=16, help="planned trials (default 16)")
    parser.add_argument("--steps", type=int, default=10, help="generator steps per trial (default 10: 5 reports)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--folder", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--no-worker-kill", action="store_true", help="skip the worker-kill check")
    args = parser.parse_args(argv)
    from trainers.tinyworld.pretrain import build_micro_checkpoints

    with tempfile.TemporaryDirectory(prefix="kill-soak-") as tmp:
        folder = Path(args.folder or tmp).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        checkpoints = build_micro_checkpoints(folder / "micro_world")
        result = soak(folder, checkpoints, args.kills, args.trials, args.seed, args.steps)
        if not args.no_worker_kill:
            result |= worker_kill(folder, checkpoints)
        result["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
