"""A real multi-node Ray on this machine (`ray.cluster_utils.Cluster`) for the node-loss tests."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psutil
from ray._private import ray_constants
from ray.cluster_utils import Cluster
from sweep_helpers import micro_spec

from orchestrator import gate
from orchestrator.sweep.engine import run_sweep


def reports(run_dir: Path) -> list[dict]:
    """Every Tune report of every trial in `run_dir`, from the trials' result.json files."""
    out = []
    for path in run_dir.glob("trial_*/result.json"):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def node_of(cluster: Cluster, worker_pid: int):
    """The cluster node whose raylet started the worker process `worker_pid`."""
    parents = {p.pid for p in psutil.Process(worker_pid).parents()}
    for node in cluster.worker_nodes:
        raylets = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, [])
        if any(info.process.pid in parents for info in raylets):
            return node
    raise AssertionError(f"no node runs worker {worker_pid}")


def held_one_trial_sweep(tmp_path: Path, checkpoints: Path, finish_gate: Path, base: dict, **sections):
    """Start a one-trial, 10-step sweep in a thread and wait until its trial is held at the finish gate
    with its step-8 report (checkpointed) recorded. Returns (thread, outcome dict, run dir, that report)."""
    spec = micro_spec(
        tmp_path, checkpoints, base=base | {"steps": 10, "report_every": 2}, scheduler=None,
        budget={"trials": 1, "concurrent": 1, "max_failures": 2},
        objectives=[{"metric": "score", "mode": "max"}], sampler={"name": "random", "seed": 0}, **sections,
    )
    run_dir = tmp_path / "runs" / "micro"
    outcome: dict = {}
    sweep = threading.Thread(target=lambda: outcome.update(result=run_sweep(spec, runs_dir=tmp_path / "runs")))
    sweep.start()
    held = gate.wait_until(
        lambda: bool(gate.waiting(finish_gate) and reports(run_dir) and reports(run_dir)[-1]["step"] == 8),
        "trial held at the gate", alive=sweep.is_alive,
    )
    assert held, "the sweep ended before its trial reached the gate"
    return sweep, outcome, run_dir, reports(run_dir)[-1]
