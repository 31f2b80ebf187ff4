"""Shared fixtures. Run the suite with `make test` (or `.venv/bin/python -m pytest`).

The micro world is the tiny world with ``micro`` teachers trained for a few steps and small pools:
every code path of distillation and sweeps runs for real, in seconds, with the shipped judge.
"""

from __future__ import annotations

import os

import pytest
import torch

# one thread per test process: this machine has two cores and torch thrashes when oversubscribed
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# every test names its own MLflow store: a developer's exported server must not receive the test runs
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def micro_checkpoints(tmp_path_factory):
    """Folder with micro base/text teachers and the shipped judge (built once per test session)."""
    from trainers.tinyworld.pretrain import build_micro_checkpoints

    return build_micro_checkpoints(tmp_path_factory.mktemp("micro_world"))


@pytest.fixture()
def micro_world(micro_checkpoints):
    """A fresh TinyWorld over the micro checkpoints and micro pools."""
    from trainers.tinyworld.pretrain import MICRO_WORLD
    from trainers.tinyworld.world import TinyWorld

    return TinyWorld(checkpoints=micro_checkpoints, **MICRO_WORLD)


@pytest.fixture(scope="session")
def micro_sweep(tmp_path_factory, micro_checkpoints):
    """A finished micro sweep (4 trials, 2 objectives, real Ray Tune + Optuna + MLflow), run once.

    Returns the spec path; the run dir is `<folder>/runs/micro`, the MLflow store `<folder>/mlflow.db`.
    Tests that read it share it: add to it (a promoted run, a registered model) but do not remove.
    """
    from sweep_helpers import write_spec

    from orchestrator.spec import load_spec
    from orchestrator.sweep.engine import run_sweep

    folder = tmp_path_factory.mktemp("micro_sweep")
    path = write_spec(
        folder, micro_checkpoints, scheduler=None, budget={"trials": 4, "concurrent": 2},
        promote={"steps": 6, "pick": "knee"},
    )
    run_sweep(load_spec(path), runs_dir=folder / "runs")
    return path


@pytest.fixture()
def finish_gate(tmp_path, monkeypatch):
    """The finish gate's folder (orchestrator/gate.py), in the environment before any Ray process starts
    (they inherit it)."""
    from orchestrator import gate

    folder = tmp_path / "gate"
    monkeypatch.setenv(gate.ENV, str(folder))
    return folder


@pytest.fixture()
def cluster(finish_gate):
    """A real multi-node Ray on this machine: a head with 0 CPUs and two 1-CPU nodes, the driver joined."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def tiny_real_world(tmp_path_factory):
    """A random-weight real-format world folder (trainers.worlds.diffusers.make_tiny), built once; returns world.yaml."""
    from trainers.worlds.diffusers.make_tiny import build
    return build(tmp_path_factory.mktemp("real_world") / "world")
