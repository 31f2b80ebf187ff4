"""Micro sweep specs for the engine tests: real Ray Tune, Optuna, MLflow and DMD, a few seconds per trial."""

from __future__ import annotations

from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from orchestrator.spec import SweepSpec, load_spec
from trainers.tinyworld.pretrain import MICRO_WORLD

MICRO_BASE = {
    "steps": 4,
    "report_every": 2,
    "batch_size": 4,
    "eval_items": 16,
    "eval_items_quick": 8,
    "critic_updates": 1,
    "warmup_steps": 0,
}


def write_spec(folder: Path, checkpoints: Path, **sections) -> Path:
    """A micro spec (task-ratio search, 2 objectives, ASHA, 4 trials) with `sections` replaced."""
    spec = {
        "name": "micro",
        "world": {"name": "tiny", "checkpoints": str(checkpoints), **MICRO_WORLD},
        "base": MICRO_BASE,
        "search": {"t2i_edit_ratio": {"float": [0.1, 0.9], "step": 0.1}},
        "objectives": [{"metric": "t2i_score", "mode": "max"}, {"metric": "edit_score", "mode": "max"}],
        "sampler": {"name": "nsga2", "seed": 0, "options": {"population_size": 4}},
        "scheduler": {"name": "asha", "metric": "score", "grace_steps": 2, "reduction_factor": 3},
        "budget": {"trials": 4, "concurrent": 2},
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
    }
    spec.update(sections)
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def micro_spec(folder: Path, checkpoints: Path, **sections) -> SweepSpec:
    return load_spec(write_spec(folder, checkpoints, **sections))


def mlflow_runs(uri: str, experiment: str) -> tuple[list, list]:
    """(parent runs, child runs) of a sweep's MLflow experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("role") == "trial"]
    return parents, children
