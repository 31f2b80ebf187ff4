"""Worker loss: the node running a checkpointed trial is removed; the trial resumes elsewhere and finishes.

Run: .venv/bin/python -m pytest tests/test_worker_loss.py -q
A real multi-node Ray on this machine (`ray.cluster_utils.Cluster`): a head with 0 CPUs, two 1-CPU nodes.
The finish gate (orchestrator/gate.py) holds the trial before its final report, so its node is
removed while it runs, however fast the machine; the gate opens once the node is gone.
"""

from __future__ import annotations

import pytest
from cluster_helpers import held_one_trial_sweep, node_of, reports

from orchestrator import gate

pytestmark = pytest.mark.slow


def test_trial_resumes_from_its_checkpoint_after_its_node_is_lost(tmp_path, micro_checkpoints, cluster, finish_gate):
    base = {"batch_size": 4, "eval_items": 16, "eval_items_quick": 8, "critic_updates": 1, "warmup_steps": 0}
    sweep, outcome, run_dir, lost = held_one_trial_sweep(tmp_path, micro_checkpoints, finish_gate, base)
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
