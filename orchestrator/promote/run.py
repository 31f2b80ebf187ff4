"""The full run of a promoted recipe: distil, compare with the teacher, save the student folder, register it.

    card = full_run(sweep, recipe, lineage, tracker, check, console)   # the MLflow run ends with it

The student folder (runs/<name>/promoted/<run id>/) holds transformer/ (what
`load_model(FlowModel, folder, subfolder="transformer")` loads), recipe.yaml and card.json; the card
holds the student's, teacher@50's and teacher@nfe's scores and the sampling speedup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from orchestrator.metrics import SCORES
from orchestrator.promote.seeds import SeedCheck
from orchestrator.promote.source import Sweep
from orchestrator.promote.tracker import Lineage, PromotionTracker
from trainers.checkpoint import MODEL_SUBFOLDER, RECIPE_FILE, save_card, save_model, write_atomically
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
from trainers.sampling import StudentScheduler
from trainers.world import World, shared_world

SHOWN = (*SCORES, "diversity")  # the scores every promotion table shows
TEACHER_NFE = 50  # the reference teacher: 50 Euler steps with CFG (DESIGN §7)
SPEED_ITEMS = 64  # items per timed sampling batch (benchmarks/student_speedup.py's default)


def save_student(folder: Path, student: torch.nn.Module, recipe: Recipe, card: dict[str, Any]) -> Path:
    """transformer/ (a diffusers folder, safetensors), recipe.yaml and card.json, written atomically."""

    def write(tmp: Path) -> None:
        save_model(student, tmp / MODEL_SUBFOLDER)
        (tmp / RECIPE_FILE).write_text(recipe.to_yaml())
        save_card(tmp, card)

    return write_atomically(folder, write)


def references(
    world: World, recipe: Recipe, student: torch.nn.Module, student_scores: dict[str, float]
) -> dict:
    """Student vs teacher@50 and teacher@nfe (both with the recipe's CFG) on the student's benchmark items,
    with per-sample sampling times; the student's scores are those of its final evaluation."""
    teacher = world.load_teachers()["base"].model
    config = EvalConfig(items=recipe.eval_items)  # the items and noise distill's final evaluation used
    samplers = {
        "student": student_generator(student, StudentScheduler.from_recipe(recipe)),
        f"teacher@{TEACHER_NFE}": teacher_generator(
            teacher, TEACHER_NFE, recipe.guidance_scale, recipe.timestep_shift, recipe.cfg
        ),
        f"teacher@{recipe.nfe}": teacher_generator(
            teacher, recipe.nfe, recipe.guidance_scale, recipe.timestep_shift, recipe.cfg
        ),
    }
    timing = build_eval_set(world, EvalConfig(items=min(SPEED_ITEMS, recipe.eval_items)))
    student.eval()
    out: dict[str, dict[str, float]] = {}
    for name, generate in samplers.items():
        scores = student_scores if name == "student" else evaluate(world, generate, config)
        shown = {k: float(scores[k]) for k in SHOWN if k in scores}  # diversity: the tiny world's only
        out[name] = shown | {"ms_per_sample": ms_per_sample(generate, timing)}
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
        folder = save_student(sweep.run.promoted(run_id), result.student, recipe, card)
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
        "load": f"FlowModel.from_pretrained(folder, subfolder='{MODEL_SUBFOLDER}')  # trainers.models",
        "sample": f"trainers.sampling.StudentScheduler(nfe={recipe.nfe}, shift={recipe.timestep_shift})"
        ".sample(model, cond, eps, noise)",
        "recipe": RECIPE_FILE,
        "steps": steps,
        "lineage": {**lineage.tags(), "sweep": lineage.sweep, "promotion_run_id": run_id},
        "scores": refs["models"],
        "speedup": refs["speedup"],
        "benchmark_items": refs["items"],
        "seed_check": None if check is None else check.summary(list(dict.fromkeys([*SHOWN, check.metric]))),
    }
