"""The promotion's MLflow records: lineage tags, the run, its params and metrics, the registered version.

Run: .venv/bin/python -m pytest tests/test_promote_tracker.py -q

One fresh sqlite store for the module (creating it takes seconds); no training.
"""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.promote.source import PromoteError
from orchestrator.promote.tracker import ARTIFACT_PATH, Lineage, PromotionTracker
from trainers.recipe import Recipe

LINEAGE = Lineage("micro", "sweep-1", "t1", "run-t1", "knee")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A store holding the experiment `micro`, as a sweep leaves it."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('promote_store') / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("micro")
    return uri


def test_lineage_tags_name_the_source():
    assert LINEAGE.tags() == {
        "role": "promotion",
        "sweep_id": "sweep-1",
        "source_trial_id": "t1",
        "source_run_id": "run-t1",
        "promoted_from": "run-t1",
        "pick": "knee",
        "seed_check": "none",
    }
    untracked = Lineage("micro", "sweep-1", "t1", "", "trial:t1", "forced")
    assert untracked.tags()["promoted_from"] == "t1" and untracked.tags()["seed_check"] == "forced"


def test_open_refuses_a_store_without_the_sweep(store, tmp_path):
    missing = f"sqlite:///{tmp_path / 'nope.db'}"
    with pytest.raises(PromoteError, match=r"no MLflow store at sqlite:///.*nope.db \(relative to .*\): run promote"):
        PromotionTracker.open(missing, "micro")
    assert not (tmp_path / "nope.db").exists()  # nothing created
    with pytest.raises(PromoteError, match="no MLflow experiment 'other' at sqlite:///"):
        PromotionTracker.open(store, "other")


def test_a_promotion_run_and_its_registered_version(store, tmp_path):
    tracker = PromotionTracker.open(store, "micro")
    recipe = Recipe(steps=6, seed=3)
    run_id = tracker.start(recipe, LINEAGE)
    tracker.on_report(2, {"score": 0.5, "final": 0.0}, lambda path: path)
    assert tracker.on_report(4, {"score": 0.6}, lambda path: path) is False  # never stops the run
    folder = tmp_path / "student"
    folder.mkdir()
    (folder / "card.json").write_text("{}")
    versions = [tracker.register(folder, "micro-student"), tracker.register(folder, "micro-student")]
    tracker.end("FINISHED")

    client = tracker.client
    run = client.get_run(run_id)
    assert run.info.run_name == "promote_t1" and run.info.status == "FINISHED"
    assert run.data.tags.items() >= LINEAGE.tags().items() and "mlflow.parentRunId" not in run.data.tags
    assert run.data.params == {k: str(v) for k, v in recipe.to_flat_dict().items()}
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "score")] == [(2, 0.5), (4, 0.6)]
    assert Recipe.from_yaml(client.download_artifacts(run_id, "recipe.yaml", str(tmp_path))) == recipe
    assert versions == ["1", "2"]
    version = client.get_model_version("micro-student", "2")
    assert version.run_id == run_id and version.source.endswith(f"/{ARTIFACT_PATH}")
    assert version.tags == LINEAGE.tags()
    model = client.get_registered_model("micro-student")
    assert model.description == "DMD students promoted from the sweep 'micro'"
