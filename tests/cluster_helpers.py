"""A real multi-node Ray on this machine (`ray.cluster_utils.Cluster`) for the node-loss tests."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
from ray._private import ray_constants
from ray.cluster_utils import Cluster


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
