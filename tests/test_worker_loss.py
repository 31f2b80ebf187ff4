"""Worker loss: the node running a checkpointed trial is removed; the trial resumes elsewhere and finishes.

Run: .venv/bin/python -m pytest tests/test_worker_loss.py -q
A real multi-node Ray on this machine (`ray.cluster_utils.Cluster`): a head with 0 CPUs, two 1-CPU nodes.
The finish gate (orchestrator/gate.py) holds the trial before its final report, so its node is
removed while it runs, however fast the machine; the gate opens once the node is gone.
"""

from __future__ import annotations

import threading

import pytest
import ray
from cluster_helpers import node_of, reports
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
        lambda: bool(gate.waiting(finish_gate) and reports(run_dir) and reports(run_dir)[-1]["step"] == 8),
        "trial held at the gate", alive=sweep.is_alive,
    )
    assert held, "the sweep ended before its trial reached the gate"
    lost = reports(run_dir)[-1]
    assert not lost.get("final")
    cluster.remove_node(node_of(cluster, lost["pid"]))
    gate.open_gate(finish_gate)  # the retry, on the other node, may now finish
    sweep.join(timeout=600)
    assert not sweep.is_alive()

    trials = outcome["result"].tables.trials
    assert trials["status"].to_list() == ["FINISHED"]
    results = reports(run_dir)
    restarted = [r for r in results if r["iterations_since_restore"] == 1 and r is not results[0]]
    assert restarted, "the trial was not restarted"
    # The last report before the loss came with its checkpoint: the retry starts from it, not from step 0.
    assert restarted[0]["step"] > lost["step"]
    assert restarted[0]["pid"] != lost["pid"]
    assert results[-1]["step"] == 10 and results[-1]["final"] == 1.0
