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

import threading

import polars as pl
import pytest
import ray
from cluster_helpers import node_of, reports
from ray.cluster_utils import Cluster
from sweep_helpers import micro_spec, mlflow_runs

from orchestrator import gate
from orchestrator.sweep.engine import run_sweep

pytestmark = pytest.mark.slow

BASE = {"steps": 6, "report_every": 2, "batch_size": 4, "eval_items": 16, "eval_items_quick": 8,
        "critic_updates": 1, "warmup_steps": 0}
WORKERS = {"cpu": 1, "workers": 2}


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
    spec = micro_spec(
        tmp_path, micro_checkpoints, base=BASE | {"steps": 10}, resources=WORKERS, scheduler=None,
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
