"""Multi-worker trials (orchestrator/workers.py) on a real multi-node Ray: `resources: {cpu: 1, workers: 2}`.

Run: .venv/bin/python -m pytest tests/test_workers.py -q
A head with 0 CPUs and two 1-CPU worker nodes (`ray.cluster_utils.Cluster`); each trial drives a
TorchTrainer with 2 gloo workers. That data parallelism is correct (the 2-worker update equals the
1-worker update on the same global batch) is tests/test_parallel.py; here: the sweep machinery
around it (ASHA-visible reports, Tune checkpoints and the sample grid, MLflow children) and the
recovery of a trial whose worker node is removed while it runs (the finish gate holds the trial
before its final report, so the node goes while it runs, however fast the machine).
"""

from __future__ import annotations

import polars as pl
import pytest
from cluster_helpers import held_one_trial_sweep, node_of, reports
from sweep_helpers import micro_spec, mlflow_runs

from orchestrator import gate
from orchestrator.sweep.engine import run_sweep

pytestmark = pytest.mark.slow

BASE = {"steps": 6, "report_every": 2, "batch_size": 4, "eval_items": 16, "eval_items_quick": 8,
        "critic_updates": 1, "warmup_steps": 0}
WORKERS = {"cpu": 1, "workers": 2}


def test_a_two_worker_sweep_runs_on_a_multi_node_cluster(tmp_path, micro_checkpoints, cluster, finish_gate):
    gate.open_gate(finish_gate)  # nothing held in this test
    spec = micro_spec(tmp_path, micro_checkpoints, base=BASE, resources=WORKERS,
                      budget={"trials": 2, "concurrent": 1})
    outcome = run_sweep(spec, runs_dir=tmp_path / "runs")
    trials = outcome.tables.trials
    assert trials.height == 2
    assert set(trials["status"]) <= {"FINISHED", "STOPPED"} and "FINISHED" in set(trials["status"])
    run_dir = tmp_path / "runs" / "micro"
    results = reports(run_dir)
    # every report reached Tune (ASHA ranks on them), from a 2-worker Train run
    assert results and all(r["workers"] == 2.0 for r in results)
    finished = trials.filter(pl.col("status") == "FINISHED")
    assert finished["t2i_score"].is_finite().all() and finished["edit_score"].is_finite().all()
    # the final report's Tune checkpoint holds the sample grid, as a one-process trial's does
    grids = list(run_dir.glob("trial_*/checkpoint_*/samples.png"))
    assert grids, "no sample grid in the trials' Tune checkpoints"
    parents, children = mlflow_runs(spec.tracking.uri, spec.name)
    assert len(parents) == 1 and len(children) == 2


def test_a_worker_node_removed_mid_trial_resumes_from_the_checkpoint(tmp_path, micro_checkpoints, cluster, finish_gate):
    sweep, outcome, run_dir, lost = held_one_trial_sweep(
        tmp_path, micro_checkpoints, finish_gate, BASE, resources=WORKERS)
    assert lost["resumed_from_step"] == 0.0
    cluster.remove_node(node_of(cluster, int(lost["worker_pid"])))  # rank 0's node
    gate.open_gate(finish_gate)  # the restarted workers may now finish
    sweep.join(timeout=600)
    assert not sweep.is_alive()

    assert outcome["result"].tables.trials["status"].to_list() == ["FINISHED"]
    final = reports(run_dir)[-1]
    assert final["final"] == 1.0 and final["step"] == 10
    # new worker processes, which started from the step-8 checkpoint, not from step 0
    assert final["worker_pid"] != lost["worker_pid"]
    assert final["resumed_from_step"] == 8.0
