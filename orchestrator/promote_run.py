"""The full run of a promoted recipe: its MLflow run, the student folder, the registered model, the references.

    tracker = PromotionTracker.open(uri, sweep_name)             # refuses a store without the sweep
    run_id = tracker.start(recipe, lineage)                      # role=promotion, lineage tags, params
    result = distill(recipe, world, on_report=tracker.on_report, progress=True)
    folder = save_student(folder, result.student, recipe, card)  # atomic: tmp dir, then rename
    version = tracker.register(folder, f"{name}-student")

The run is not a trial, so it has no `mlflow.parentRunId` and no `trial_id` tag (the sweep's tracker
finds trial runs by `sweep_id` + `trial_id`); `promoted_from` names the source trial's run instead.
The student folder is what `FlowModel.from_pretrained(folder, subfolder="transformer")` loads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from rich.console import Console

from orchestrator.promote_pick import SHOWN, PromoteError, SeedCheck, Sweep
from orchestrator.tracking import report_metrics
from orchestrator.trial import shared_world
from trainers.checkpoint import write_atomically
from trainers.distill import distill
from trainers.evaluate import (
    EvalConfig,
    build_eval_set,
    evaluate,
    ms_per_sample,
    student_generator,
    teacher_generator,
)
from trainers.recipe import Recipe
from trainers.world import World

TRANSFORMER, RECIPE_FILE, CARD_FILE = "transformer", "recipe.yaml", "card.json"
ARTIFACT_PATH = "student"  # the folder's place among the run's artifacts (the registry's source)
TEACHER_NFE = 50  # the reference teacher: 50 Euler steps with CFG (DESIGN §7)
SPEED_ITEMS = 64  # items per timed sampling batch (benchmarks/student_speedup.py's default)


@dataclass(frozen=True)
class Lineage:
    """Where a promoted student comes from, as tags of its run and fields of its card."""

    sweep: str
    sweep_id: str
    source_trial_id: str
    source_run_id: str  # the trial's MLflow run ('' when trials.parquet has none)
    pick: str
    seed_check: str = "none"  # none | decisive | forced (--force past a lead within the seed noise)

    def tags(self) -> dict[str, str]:
        return {
            "role": "promotion",
            "sweep_id": self.sweep_id,
            "source_trial_id": self.source_trial_id,
            "source_run_id": self.source_run_id,
            "promoted_from": self.source_run_id or self.source_trial_id,
            "pick": self.pick,
            "seed_check": self.seed_check,
        }


class PromotionTracker:
    """The promotion's MLflow run in the sweep's experiment, and its registered model version."""

    def __init__(self, client: MlflowClient, experiment_id: str):
        self.client, self.experiment_id = client, experiment_id
        self.run_id, self.lineage = "", None

    @classmethod
    def open(cls, uri: str, experiment: str) -> PromotionTracker:
        """The sweep's store and experiment; PromoteError (nothing created) when either is missing."""
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise PromoteError(
                f"no MLflow store at {uri} (relative to {Path.cwd()}): run promote from the folder the sweep "
                "ran in, or set tracking.uri in the spec"
            )
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise PromoteError(
                f"no MLflow experiment {experiment!r} at {uri}: is this the store the sweep logged to?"
            )
        return cls(client, found.experiment_id)

    def start(self, recipe: Recipe, lineage: Lineage) -> str:
        """Create the run: lineage tags, the flattened recipe as params, recipe.yaml."""
        self.lineage = lineage
        run = self.client.create_run(
            self.experiment_id, tags=lineage.tags(), run_name=f"promote_{lineage.source_trial_id}"
        )
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in recipe.to_flat_dict().items()]
        for lo in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[lo : lo + 100])
        self.client.log_text(self.run_id, recipe.to_yaml(), RECIPE_FILE)
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in report_metrics(metrics).items()]
        for lo in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[lo : lo + 1000])

    def on_report(self, step: int, metrics: dict[str, float], save_checkpoint: Callable) -> bool:
        """distill's `on_report`: every report as metrics at its generator step; never stops the run."""
        self.log_metrics(metrics, step)
        return False

    def register(self, folder: Path, model_name: str) -> str:
        """Log the student folder as an artifact and register it as a new version of `model_name`."""
        self.client.log_artifacts(self.run_id, str(folder), ARTIFACT_PATH)
        if not self.client.search_registered_models(filter_string=f"name = '{model_name}'"):
            self.client.create_registered_model(
                model_name, description=f"DMD students promoted from the sweep {self.lineage.sweep!r}"
            )
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{ARTIFACT_PATH}"
        version = self.client.create_model_version(
            model_name, source=source, run_id=self.run_id, tags=self.lineage.tags()
        )
        return str(version.version)

    def end(self, status: str) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)


def save_student(folder: Path, student: torch.nn.Module, recipe: Recipe, card: dict[str, Any]) -> Path:
    """transformer/ (diffusers save_pretrained, safetensors), recipe.yaml and card.json, written atomically."""

    def write(tmp: Path) -> None:
        student.save_pretrained(tmp / TRANSFORMER)
        (tmp / RECIPE_FILE).write_text(recipe.to_yaml())
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2))

    return write_atomically(folder, write)


def references(
    world: World, recipe: Recipe, student: torch.nn.Module, student_scores: dict[str, float]
) -> dict:
    """Student vs teacher@50 and teacher@nfe (both with the recipe's CFG) on the student's benchmark items,
    with per-sample sampling times; the student's scores are those of its final evaluation."""
    teacher = world.load_teachers()["base"].model
    config = EvalConfig(items=recipe.eval_items)  # the items and noise distill's final evaluation used
    samplers = {
        "student": student_generator(student, recipe.nfe, recipe.timestep_shift),
        f"teacher@{TEACHER_NFE}": teacher_generator(
            teacher, TEACHER_NFE, recipe.guidance_scale, recipe.timestep_shift
        ),
        f"teacher@{recipe.nfe}": teacher_generator(
            teacher, recipe.nfe, recipe.guidance_scale, recipe.timestep_shift
        ),
    }
    timing = build_eval_set(world, EvalConfig(items=min(SPEED_ITEMS, recipe.eval_items)))
    student.eval()
    out: dict[str, dict[str, float]] = {}
    for name, generate in samplers.items():
        scores = student_scores if name == "student" else evaluate(world, generate, config)
        out[name] = {k: float(scores[k]) for k in SHOWN} | {"ms_per_sample": ms_per_sample(generate, timing)}
    teacher50 = out[f"teacher@{TEACHER_NFE}"]["ms_per_sample"]
    return {"models": out, "speedup": teacher50 / out["student"]["ms_per_sample"], "items": recipe.eval_items}


# -- the full run, end to end ------------------------------------------------------------------------


def full_run(
    sweep: Sweep,
    recipe: Recipe,
    lineage: Lineage,
    tracker: PromotionTracker,
    check: SeedCheck | None,
    console: Console,
) -> dict[str, Any]:
    """Distil, compare with the teacher, save and register; the MLflow run ends FINISHED, FAILED or KILLED."""
    world = shared_world(sweep.spec.world.name, sweep.spec.world.options)
    run_id = tracker.start(recipe, lineage)
    console.print(
        f"full run: trial {lineage.source_trial_id}'s recipe for {recipe.steps} steps (MLflow run {run_id})"
    )
    status = "FAILED"
    try:
        result = distill(recipe, world, on_report=tracker.on_report, progress=True)
        refs = references(world, recipe, result.student, result.metrics)
        tracker.log_metrics(reference_metrics(refs), result.steps)
        card = card_of(sweep, recipe, lineage, run_id, result.steps, refs, check)
        folder = save_student(sweep.run_dir / "promoted" / run_id, result.student, recipe, card)
        card |= {"folder": str(folder), "version": tracker.register(folder, card["name"])}
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
    return card


def reference_metrics(refs: dict[str, Any]) -> dict[str, float]:
    """teacher_50nfe/score, student/ms_per_sample, speedup, ... (MLflow names allow no '@')."""
    out = {"speedup": refs["speedup"]}
    for name, values in refs["models"].items():
        key = name.replace("@", "_") + ("nfe" if "@" in name else "")
        out |= {f"{key}/{k}": v for k, v in values.items() if name != "student" or k == "ms_per_sample"}
    return out


def card_of(
    sweep: Sweep,
    recipe: Recipe,
    lineage: Lineage,
    run_id: str,
    steps: int,
    refs: dict[str, Any],
    check: SeedCheck | None,
) -> dict[str, Any]:
    """card.json: what the folder holds, how to load and sample it, where it comes from, how it scores."""
    return {
        "name": f"{sweep.spec.name}-student",
        "load": "FlowModel.from_pretrained(folder, subfolder='transformer')  # trainers.models",
        "sample": f"trainers.evaluate.student_generator(model, nfe={recipe.nfe}, shift={recipe.timestep_shift})",
        "recipe": "recipe.yaml",
        "steps": steps,
        "lineage": {**lineage.tags(), "sweep": lineage.sweep, "promotion_run_id": run_id},
        "scores": refs["models"],
        "speedup": refs["speedup"],
        "benchmark_items": refs["items"],
        "seed_check": None if check is None else check.summary(list(dict.fromkeys([*SHOWN, check.metric]))),
    }
