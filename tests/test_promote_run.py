"""The full run of a promoted recipe: references, the card, the student folder, end to end.

Run: .venv/bin/python -m pytest tests/test_promote_run.py -q

The parts are checked on the micro world and a micro student in seconds; the slow tests promote
trials of the shared `micro_sweep` (real DMD, MLflow store and registry) through the CLI's main.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import polars as pl
import pytest
import torch
from promote_helpers import fake_sweep, micro, run_main, runs, versions

from orchestrator import pareto
from orchestrator.promote.run import (
    SHOWN,
    TEACHER_NFE,
    card_of,
    reference_metrics,
    references,
    save_student,
)
from orchestrator.promote.seeds import SeedStats, seed_check
from orchestrator.promote.source import open_sweep
from orchestrator.promote.tracker import Lineage, PromotionTracker
from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec
from trainers.checkpoint import CARD_FILE, load_model
from trainers.evaluate import EvalConfig, build_eval_set, evaluate, student_generator, teacher_generator
from trainers.models import FlowModel
from trainers.recipe import Recipe
from trainers.sampling import StudentScheduler
from trainers.world import shared_world

REFS = {
    "models": {
        "student": {"score": 0.5, "ms_per_sample": 1.0},
        "teacher@50": {"score": 0.7, "ms_per_sample": 12.0},
        "teacher@4": {"score": 0.2, "ms_per_sample": 1.5},
    },
    "speedup": 12.0,
    "items": 16,
}


def test_reference_metrics_are_mlflow_names():
    assert reference_metrics(REFS) == {
        "speedup": 12.0,
        "student/ms_per_sample": 1.0,  # the student's scores are its final evaluation's, logged already
        "teacher_50nfe/score": 0.7,
        "teacher_50nfe/ms_per_sample": 12.0,
        "teacher_4nfe/score": 0.2,
        "teacher_4nfe/ms_per_sample": 1.5,
    }


def test_card_records_lineage_scores_and_the_seed_check(tmp_path, micro_checkpoints):
    sweep = open_sweep(*fake_sweep(tmp_path, micro_checkpoints))
    lineage = Lineage("micro", "sweep-1", "b", "run-b", "knee", "decisive")
    check = seed_check([SeedStats("b", [{k: 0.5 for k in SHOWN}] * 2)], "score", "max")
    card = card_of(sweep, Recipe(nfe=2, timestep_shift=1.5), lineage, "run-p", 6, REFS, check)
    assert card["name"] == "micro-student" and card["steps"] == 6 and card["recipe"] == "recipe.yaml"
    assert card["lineage"] == lineage.tags() | {"sweep": "micro", "promotion_run_id": "run-p"}
    assert card["scores"] == REFS["models"] and card["speedup"] == 12.0 and card["benchmark_items"] == 16
    assert "nfe=2, shift=1.5" in card["sample"]
    assert card["seed_check"]["candidates"] == {"b": {k: [0.5, 0.0] for k in SHOWN}}
    assert card_of(sweep, Recipe(), lineage, "run-p", 6, REFS, None)["seed_check"] is None


def test_student_folder_loads_back(tmp_path):
    student = FlowModel.build("micro")
    recipe = Recipe(nfe=2, seed=9)
    folder = save_student(tmp_path / "promoted" / "run-p", student, recipe, {"name": "micro-student"})
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "recipe.yaml", "transformer"]
    assert [p.name for p in (tmp_path / "promoted").iterdir()] == ["run-p"]  # no temporary folder left
    loaded = load_model(FlowModel, folder, subfolder="transformer")
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), loaded.state_dict().values(), strict=True))
    assert Recipe.from_yaml(folder / "recipe.yaml") == recipe
    assert json.loads((folder / CARD_FILE).read_text()) == {"name": "micro-student"}


@pytest.mark.slow  # teacher@50 on the micro world, and the timing runs: ~20 s
def test_references_score_the_teacher_at_two_step_counts(micro_world):
    recipe = Recipe(nfe=2, eval_items=8, eval_items_quick=8)
    student = FlowModel.build("micro")
    scores = {k: 0.25 for k in SHOWN}
    refs = references(micro_world, recipe, student, scores)
    assert list(refs["models"]) == ["student", f"teacher@{TEACHER_NFE}", "teacher@2"] and refs["items"] == 8
    assert refs["models"]["student"] == scores | {"ms_per_sample": refs["models"]["student"]["ms_per_sample"]}
    assert all(set(m) == {*SHOWN, "ms_per_sample"} and m["ms_per_sample"] > 0 for m in refs["models"].values())
    assert refs["speedup"] == pytest.approx(
        refs["models"][f"teacher@{TEACHER_NFE}"]["ms_per_sample"] / refs["models"]["student"]["ms_per_sample"]
    )
    # the teacher at the student's NFE, with the recipe's CFG, on the items of the student's final evaluation
    teacher = micro_world.load_teachers()["base"].model
    generate = teacher_generator(teacher, 2, recipe.guidance_scale, recipe.timestep_shift)
    expected = evaluate(micro_world, generate, EvalConfig(items=8))
    assert refs["models"]["teacher@2"]["score"] == pytest.approx(float(expected["score"]), abs=1e-6)


# -- end to end on the micro sweep ------------------------------------------------------------------


@pytest.mark.slow
def test_promote_knee_registers_a_loadable_student(micro_sweep, capsys):
    run_dir, uri, client = micro(micro_sweep)
    before = len(versions(client))
    code, out, _ = run_main(capsys, run_dir, "--spec", micro_sweep)  # the spec's promote: knee, 6 steps
    assert code == 0, out
    spec = load_spec(micro_sweep)
    run_folder = RunDir(run_dir)
    trials = pl.read_parquet(run_folder.trials)
    objectives = pareto.objectives_of(spec)
    knee = pareto.knee(
        pareto.pareto_front(trials.filter(pl.col("status") == "FINISHED"), objectives), objectives
    )
    # a new version, whose run carries the lineage
    found = versions(client)
    version = max(found, key=lambda v: int(v.version))
    assert len(found) == before + 1 and int(version.version) == before + 1
    run = client.get_run(version.run_id)
    tags = run.data.tags
    assert tags["role"] == "promotion" and tags["source_trial_id"] == knee["trial_id"]
    assert tags["sweep_id"] == run_folder.record()["sweep_id"]
    assert tags["promoted_from"] == tags["source_run_id"] == knee["mlflow_run_id"]
    assert "mlflow.parentRunId" not in tags and "trial_id" not in tags and run.info.status == "FINISHED"
    # params: the trial's recipe (as its own MLflow run logged it) with the full run's steps
    trial_params = {
        k: v for k, v in client.get_run(knee["mlflow_run_id"]).data.params.items() if "raw" not in k
    }
    assert run.data.params == trial_params | {"steps": "6"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [2, 4, 6]
    # the folder: complete, no temporary leftovers, and it loads and samples
    folder = run_folder.promoted(run.info.run_id)
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []
    card = json.loads((folder / CARD_FILE).read_text())
    recipe = Recipe.from_yaml(folder / "recipe.yaml")
    model = load_model(FlowModel, folder, subfolder="transformer")
    world = shared_world(spec.world.name, spec.world.options)
    es = build_eval_set(world, EvalConfig(items=8))
    n = len(es)
    with torch.no_grad():
        images = student_generator(model, StudentScheduler(recipe.nfe))(
            es.eps, es.cond, lambda k: es.renoise(k, torch.arange(n))
        )
    assert images.shape == (n, 3, 16, 16) and torch.isfinite(images).all()
    # the saved student is the one scored in the card
    scores = evaluate(world, student_generator(model, StudentScheduler(recipe.nfe)), EvalConfig(items=recipe.eval_items))
    assert scores["score"] == pytest.approx(card["scores"]["student"]["score"], abs=1e-6)
    # the registry's source is a copy of the folder
    registered = Path(
        mlflow.artifacts.download_artifacts(
            client.get_model_version_download_uri("micro-student", version.version)
        )
    )
    assert json.loads((registered / CARD_FILE).read_text()) == card
    assert f"registered micro-student version {version.version}" in out
    assert "teacher@50 (CFG 3)" in out and "teacher@4 (CFG 3)" in out and "speedup:" in out


@pytest.mark.slow
def test_interrupted_full_run_leaves_no_folder(micro_sweep, capsys, monkeypatch):
    run_dir, uri, client = micro(micro_sweep)
    count, before_runs = len(versions(client)), {r.info.run_id for r in runs(client)}
    promoted = RunDir(run_dir).promoted("any").parent
    folders = lambda: set(promoted.glob("*")) | set(promoted.glob(".*"))  # noqa: E731
    before = folders()

    def interrupt(self, step, metrics, save):
        raise KeyboardInterrupt  # as Ctrl-C at the first report

    monkeypatch.setattr(PromotionTracker, "on_report", interrupt)
    code, _, err = run_main(capsys, run_dir, "--spec", micro_sweep, "--steps", "4")
    assert code == 130 and "interrupted: nothing promoted" in err
    new = [r for r in runs(client) if r.info.run_id not in before_runs]
    assert len(new) == 1 and new[0].info.status == "KILLED" and len(versions(client)) == count
    assert folders() == before  # no student folder, no temporary one
