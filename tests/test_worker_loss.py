"""Worker loss: the node running a checkpointed trial is removed; the trial resumes elsewhere and finishes.

Run: .venv/bin/python -m pytest tests/test_worker_loss.py -q
A real multi-node Ray on this machine (`ray.cluster_utils.Cluster`): a head with 0 CPUs, two 1-CPU nodes.
The finish gate (orchestrator/gate.py) holds the trial before its final report, so its node is
removed while it runs, however fast the machine; the gate opens once the node is gone.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psutil
import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster
from sweep_helpers import micro_spec

from orchestrator import gate
from orchestrator.sweep.engine import run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture()
def finish_gate(tmp_path, monkeypatch):
    """The gate folder, in the environment before the cluster's processes start (they inherit it)."""
    folder = tmp_path / "gate"
    monkeypatch.setenv(gate.ENV, str(folder))
    return folder


@pytest.fixture()
def cluster(finish_gate):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _reports(run_dir: Path) -> list[dict]:
    out = []
    for path in run_dir.glob("trial_*/result.json"):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def _node_of(cluster: Cluster, worker_pid: int):
    """The cluster node whose raylet started the worker process `worker_pid`."""
    parents = {p.pid for p in psutil.Process(worker_pid).parents()}
    for node in cluster.worker_nodes:
        raylets = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, [])
        if any(info.process.pid in parents for info in raylets):
            return node
    raise AssertionError(f"no node runs worker {worker_pid}")


def test_trial_resumes_from_its_checkpoint_after_its_node_is_lost(tmp_path, micro_checkpoints, cluster, finish_gate):
    base = {"steps": 10, "report_every": 2, "batch_size": 4, "eval_items": 16, "eval_items_quick": 8,
            "critic_updates": 1, "warmup_steps": 0}
    spec = micro_spec(
        tmp_path, micro_checkpoints, base=base, scheduler=None,
        budget={"trials": 1, "concurrent": 1, "max_failures": 2},
        objectives=[{"metric": "score", "mode": "max"}], sampler={"name": "random", "seed": 0},
    )
    run_dir = tmp_path / "runs" / "micro"
    outcome: dict = {}
    sweep = threading.Thread(target=lambda: outcome.update(result=run_sweep(spec, runs_dir=tmp_path / "runs")))
    sweep.start()
    # Trained to the end and held; its last intermediate report (step 8, checkpointed) recorded.
    held = gate.wait_until(
        lambda: bool(gate.waiting(finish_gate) and _reports(run_dir) and _reports(run_dir)[-1]["step"] == 8),
        "trial held at the gate", alive=sweep.is_alive,
    )
    assert held, "the sweep ended before its trial reached the gate"
    lost = _reports(run_dir)[-1]
    assert not lost.get("final")
    cluster.remove_node(_node_of(cluster, lost["pid"]))
    gate.open_gate(finish_gate)  # the retry, on the other node, may now finish
    sweep.join(timeout=600)
    assert not sweep.is_alive()

    trials = outcome["result"].tables.trials
    assert trials["status"].to_list() == ["FINISHED"]
    reports = _reports(run_dir)
    restarted = [r for r in reports if r["iterations_since_restore"] == 1 and r is not reports[0]]
    assert restarted, "the trial was not restarted"
    # The last report before the loss came with its checkpoint: the retry starts from it, not from step 0.
    assert restarted[0]["step"] > lost["step"]
    assert restarted[0]["pid"] != lost["pid"]
    assert reports[-1]["step"] == 10 and reports[-1]["final"] == 1.0
