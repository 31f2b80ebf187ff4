"""``distill(recipe, world, on_report)``: one DMD2 distillation run, callable from anywhere.

The loop reads top to bottom: build the teacher set and the λ schedule, start student and fake
score from the base teacher, then repeat DMD cycles (``critic_updates`` fake-score updates + one
generator update) on batches whose composition follows the recipe's three axes. Every
``report_every`` generator steps the student is scored on the quick fixed-seed benchmark and
``on_report(step, metrics, save_checkpoint)`` is called; returning True stops the run there (ASHA).
At the end the full benchmark runs and ``on_report`` sees it with ``final = 1.0``.
A notebook, a test or a Ray worker calls this the same way (no Ray, Optuna or MLflow here).

Accelerate places the models and batches on the device and supplies bf16 autocast
(``mixed_precision``); gradient accumulation is DMDConfig's ``grad_accum`` (each accumulated
micro-batch draws its own data, as the DMD update functions do).

CLI: ``python -m trainers.distill --recipe recipe.yaml [--set key=value ...]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from tqdm import tqdm

from trainers.checkpoint import checkpoint_recipe, load_checkpoint, save_checkpoint
from trainers.cond import Cond
from trainers.data import BatchSampler
from trainers.divergence import DivergedError
from trainers.dmd import CycleLogs, DMDConfig, DMDState, dmd_cycle
from trainers.evaluate import EvalConfig, evaluate, student_generator
from trainers.parallel import ONE_PROCESS, Shard
from trainers.recipe import Recipe
from trainers.sampling import StudentScheduler
from trainers.teachers import TeacherSchedule
from trainers.world import World, load_world
from trainers.yaml_dialect import load_yaml

SaveCheckpoint = Callable[[str | Path], Path]
OnReport = Callable[[int, dict[str, float], SaveCheckpoint], "bool | None"]
"""``on_report(step, metrics, save_checkpoint) -> stop?``: return True to stop the run early."""

# Recipe fields a resumed run may change: they steer reporting, the budget and memory, not the training maths.
RESUMABLE_CHANGES = frozenset(
    {"steps", "report_every", "eval_items", "eval_items_quick", "gradient_checkpointing"})

__all__ = ["BatchDraw", "DistillResult", "DivergedError", "distill", "main", "prepare"]


@dataclass
class DistillResult:
    """What a run leaves: its last metrics, the student to sample from (the EMA when on), steps done."""

    metrics: dict[str, float]
    student: torch.nn.Module
    steps: int
    wall_s: float
    stopped_early: bool
    save_checkpoint: SaveCheckpoint  # writes the run's current state, as on_report's callback does


class BatchDraw:
    """Batch conditions for the DMD updates: the recipe's sampler over the world's training pools.

    In a data-parallel run every process samples the same global batch (same seed) and keeps its
    own rows of it (``trainers/parallel.py``); the composition counts stay the global batch's.
    """

    def __init__(self, world: World, recipe: Recipe, device: torch.device, shard: Shard = ONE_PROCESS):
        self.world, self.device, self.shard = world, device, shard
        shard.local(recipe.batch_size)  # a batch that does not split evenly is refused before training
        prompts, edits = world.prompt_pool("train"), world.edit_pool("train")
        self.prompts, self.edits = prompts.to_pylist(), edits.to_pylist()
        self.sampler = BatchSampler.from_recipe(prompts, edits, recipe)

    def __call__(self) -> Cond:
        batch = self.sampler.sample()
        parts = []
        if len(batch.t2i):
            parts.append(self.world.t2i_cond([self.prompts[i] for i in batch.t2i.rows]))
        if len(batch.edit):
            parts.append(self.world.edit_cond([self.edits[i] for i in batch.edit.rows]))
        cond = Cond.concat(parts)
        if self.shard.world > 1:
            rows = self.shard.rows(len(cond))
            cond = cond.select(torch.arange(rows.start, rows.stop))
        return cond.to(self.device)


def _accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator for this run.

    Accelerate keeps one process-wide state and refuses a second Accelerator with another precision;
    one process runs many trials (Ray's reused actors, a notebook), so a changed precision resets it.
    fp16 would need loss scaling around DMD's two optimisers, which this loop does not do: bf16 does not.
    """
    if mixed_precision == "fp16":
        raise ValueError("mixed_precision='fp16' is not supported by the DMD loop (no loss scaling); use 'bf16'")
    try:
        return Accelerator(mixed_precision=mixed_precision)
    except ValueError:  # "AcceleratorState has already been initialized and cannot be changed"
        AcceleratorState._reset_state()
        return Accelerator(mixed_precision=mixed_precision)


def _save(state: DMDState, draw: BatchDraw, recipe: Recipe, path: str | Path) -> Path:
    """Checkpoint folder: student/, fake/, ema/ (diffusers safetensors), state.{json,safetensors}, recipe.yaml."""
    state_dict = {"dmd": state.state_dict(), "sampler": draw.sampler.state_dict()}
    return save_checkpoint(path, _models(state), state_dict, recipe)


def _models(state: DMDState) -> dict[str, torch.nn.Module | None]:
    """The model folders of a checkpoint (no ema/ when the EMA is off)."""
    return {"student": state.student, "fake": state.fake, "ema": state.ema}


def _restore(state: DMDState, draw: BatchDraw, recipe: Recipe, path: str | Path) -> None:
    """Load a checkpoint written by :func:`_save` into a freshly built state (weights, optimisers, RNGs)."""
    saved_recipe = checkpoint_recipe(path).model_dump()
    changed = sorted(k for k, v in recipe.model_dump().items() if saved_recipe[k] != v and k not in RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"resume_from={str(path)!r}: the checkpoint was trained with other values of {changed}")
    saved = load_checkpoint(path, _models(state))
    state.load_state_dict(saved["dmd"])
    draw.sampler.load_state_dict(saved["sampler"])


def _sampler_model(state: DMDState) -> torch.nn.Module:
    """The model the benchmark scores: the EMA when there is one (DESIGN §7: never the best iterate)."""
    return state.ema if state.ema is not None else state.student


def _metrics(world: World, state: DMDState, draw: BatchDraw, recipe: Recipe, logs: CycleLogs, items: int,
             start: float) -> dict[str, float]:
    """Benchmark scores of the student + the realised batch composition + the last cycle's training logs."""
    model = _sampler_model(state)
    was_training = model.training
    model.eval()
    try:
        # the benchmark's own seed stays fixed: every trial and every recipe seed sees the same items and noise
        generate = student_generator(model, StudentScheduler.from_recipe(recipe))
        scores = evaluate(world, generate, EvalConfig(items=items))
    finally:
        model.train(was_training)
    composition = {f"composition/{k}": v for k, v in draw.sampler.composition().items()}
    train = {k: v for k, v in logs.floats().items() if k != "step"}
    return scores | composition | train | {
        "step": float(state.step), "nfe": float(recipe.nfe), "wall_s": time.perf_counter() - start}


def prepare(recipe: Recipe, world: World, device: torch.device | str = "cpu",
            shard: Shard = ONE_PROCESS) -> tuple[DMDState, BatchDraw]:
    """The DMD state (teachers, λ schedule, student, fake score, optimisers) and the batch draw of a run.

    ``shard``: this process's place in a data-parallel run (every process builds the same state).
    """
    torch.manual_seed(recipe.seed)
    # 1. teachers and the step-wise multi-teacher schedule
    teachers = world.load_teachers()
    for teacher in teachers.values():
        teacher.model.to(device)
    schedule = TeacherSchedule.from_recipe(recipe, teachers)
    # 2. student and fake score start as the base teacher (DMD2): full copies, or LoRA adapters on it
    config = DMDConfig.from_recipe(recipe, image_shape=tuple(world.image_shape))
    if (recipe.model_mode or world.default_model_mode()) == "adapter":
        state = DMDState.from_adapters(teachers, schedule, config, seed=recipe.seed, shard=shard)
    else:
        state = DMDState.from_base(teachers, schedule, config, seed=recipe.seed, shard=shard)
    # 3. the data axes: category mix and T2I:Edit ratio
    return state, BatchDraw(world, recipe, torch.device(device), shard)


def distill(recipe: Recipe, world: World | str = "tiny", on_report: OnReport | None = None,
            resume_from: str | Path | None = None, progress: bool = False) -> DistillResult:
    """Run DMD2 with ``recipe`` in ``world``; see the module docstring for the reporting contract.

    Data parallel when torch.distributed is initialised (``trainers/parallel.py``): every process
    calls this with the same arguments; rank 0 alone runs the benchmark, and every rank's
    ``on_report`` sees rank 0's metrics, whose answer stops them all.

    Raises :class:`DivergedError` (with the step and the quantity) on a non-finite loss, gradient
    norm or parameter, and ValueError when ``resume_from`` was trained with a different recipe.
    """
    world = load_world(world) if isinstance(world, str) else world
    shard = Shard.current()
    accelerator = _accelerator(recipe.mixed_precision)
    state, draw = prepare(recipe, world, accelerator.device, shard)
    if resume_from is not None:
        _restore(state, draw, recipe, resume_from)
    save = lambda path: _save(state, draw, recipe, path)  # noqa: E731
    scores = lambda items: shard.from_main(  # noqa: E731  (rank 0 scores; the others wait for its figures)
        _metrics(world, state, draw, recipe, logs, items, start) if shard.is_main else None)
    start, logs = time.perf_counter(), CycleLogs()
    bar = tqdm(total=recipe.steps, initial=state.step, desc="dmd", unit="step",
               disable=not progress or not shard.is_main)
    with bar:
        while state.step < recipe.steps:
            # 4. one TTUR cycle: critic_updates fake-score updates, then the generator update
            with accelerator.autocast():
                logs = dmd_cycle(state, draw)
            bar.update(1)
            if progress and state.step % recipe.report_every == 0:  # reading logs waits for the device
                train = logs.floats()
                bar.set_postfix(g=f"{train['loss/generator']:.2e}", f=f"{train.get('loss/fake', 0):.3f}")
            if state.step % recipe.report_every or state.step == recipe.steps or on_report is None:
                continue
            # 5. quick benchmark + report: the caller may checkpoint, and may stop the run
            metrics = scores(recipe.eval_items_quick)
            if shard.from_main(bool(on_report(state.step, metrics, save))):
                return DistillResult(metrics, _sampler_model(state), state.step,
                                     time.perf_counter() - start, True, save)
    # 6. the full benchmark at the end
    metrics = scores(recipe.eval_items) | {"final": 1.0}
    if on_report is not None:
        on_report(state.step, metrics, save)
    return DistillResult(metrics, _sampler_model(state), state.step, time.perf_counter() - start, False, save)


# --- command line -------------------------------------------------------------------------------


def parse_assignments(items: list[str], flag: str) -> dict:
    """``["a=1", "b.c=x"]`` -> ``{"a": 1, "b.c": "x"}``, values read as the project's YAML dialect."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = load_yaml(value)  # the project's dialect: 1e-4 is a float
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainers.distill", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, help="recipe YAML (Recipe fields; omitted fields take defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set steps=100 --set category_mix.text=2")
    parser.add_argument("--world", default="tiny", help="world name (default: the embedded tiny world)")
    parser.add_argument("--world-option", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument of the world, e.g. --world-option checkpoints=PATH")
    parser.add_argument("--resume-from", type=Path, help="checkpoint folder written by a previous run")
    parser.add_argument("--save", type=Path, help="write the final checkpoint (student, fake, state) here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one distillation; print its final metrics as one JSON line. Exit 2 on bad input, 1 on divergence."""
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        base = load_yaml(args.recipe.read_text()) if args.recipe else {}
        recipe = Recipe.from_params(base or {}, parse_assignments(args.set, "--set"))
        world = load_world(args.world, **parse_assignments(args.world_option, "--world-option"))
    except (OSError, ValueError, TypeError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = distill(recipe, world, resume_from=args.resume_from, progress=not args.no_progress)
    except DivergedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.save:
        result.save_checkpoint(args.save)
    keys = ("score", "t2i_score", "edit_score", "adherence", "purity", "diversity", "fd", "samples_per_s")
    print(json.dumps({"steps": result.steps, "wall_s": round(result.wall_s, 2),
                      **{k: round(result.metrics[k], 4) for k in keys if k in result.metrics}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
