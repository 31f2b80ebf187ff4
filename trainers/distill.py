"""``distill(recipe, world, on_report)``: one DMD2 distillation run, callable from anywhere.

The loop reads top to bottom: build the teacher set and the λ schedule, start student and fake
score from the base teacher, then repeat DMD cycles (``critic_updates`` fake-score updates + one
generator update) on batches whose composition follows the recipe's three axes. Every
``report_every`` generator steps the student is scored on the quick fixed-seed benchmark and
``on_report(step, metrics, save_checkpoint)`` is called; at the end the full benchmark runs.
A notebook, a test or a Ray worker calls this the same way (no Ray, Optuna or MLflow here).

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
from tqdm import tqdm

from trainers.checkpoint import load_state, save_state, write_atomically
from trainers.data import Batch, BatchSampler
from trainers.dmd import DivergedError, DMDConfig, DMDState, dmd_cycle
from trainers.evaluate import EvalConfig, evaluate, student_generator
from trainers.recipe import Recipe, YamlLoader
from trainers.teachers import Cond, schedule_from_recipe
from trainers.world import World, load_world

OnReport = Callable[[int, dict, Callable[[str | Path], Path]], "bool | None"]
"""``on_report(step, metrics, save_checkpoint) -> stop?``: return True to stop the run early."""

__all__ = ["DistillResult", "DivergedError", "distill"]


@dataclass
class DistillResult:
    """What a run leaves: the final metrics, the student to sample from (the EMA when on), steps done."""

    metrics: dict[str, float]
    student: torch.nn.Module
    steps: int
    wall_s: float
    stopped_early: bool = False


class _Draw:
    """Batch conditions for the DMD updates: the recipe's sampler over the world's training pools."""

    def __init__(self, world: World, recipe: Recipe, device: torch.device):
        self.world, self.device = world, device
        self.prompts = world.prompt_pool("train").to_pylist()
        self.edits = world.edit_pool("train").to_pylist()
        self.sampler = BatchSampler(world.prompt_pool("train"), world.edit_pool("train"),
                                    recipe.category_weights, recipe.t2i_edit_ratio, recipe.batch_size, recipe.seed)

    def __call__(self) -> Cond:
        batch: Batch = self.sampler.sample()
        parts = []
        if len(batch.t2i):
            parts.append(self.world.t2i_cond([self.prompts[i] for i in batch.t2i.rows]))
        if len(batch.edit):
            parts.append(self.world.edit_cond([self.edits[i] for i in batch.edit.rows]))
        return _to(Cond.concat(parts), self.device)


def _to(cond: Cond, device: torch.device) -> Cond:
    if device.type == "cpu":
        return cond
    move = {k: getattr(cond, k).to(device) for k in ("text", "text_mask", "null_text", "null_mask")}
    extra = {} if cond.source is None else {"source": cond.source.to(device), "is_edit": cond.is_edit.to(device)}
    return Cond(categories=cond.categories, **move, **extra)


def _save(state: DMDState, draw: _Draw, recipe: Recipe, path: str | Path) -> Path:
    """Checkpoint folder: student/, fake/, ema/ (diffusers), state.{json,safetensors}, recipe.yaml."""

    def write(tmp: Path) -> None:
        state.student.save_pretrained(tmp / "student")
        state.fake.save_pretrained(tmp / "fake")
        if state.ema is not None:
            state.ema.save_pretrained(tmp / "ema")
        save_state(tmp, {"dmd": state.state_dict(), "sampler": draw.sampler.state_dict()})
        (tmp / "recipe.yaml").write_text(recipe.to_yaml())

    return write_atomically(path, write)


def _restore(state: DMDState, draw: _Draw, path: str | Path) -> None:
    """Load a checkpoint written by :func:`_save` into a freshly built state (weights, optimisers, RNGs)."""
    path = Path(path)
    for name, module in (("student", state.student), ("fake", state.fake), ("ema", state.ema)):
        if module is not None:
            loaded = type(module).from_pretrained(path / name, torch_dtype=torch.float32)
            module.load_state_dict(loaded.state_dict())
    saved = load_state(path)
    state.load_state_dict(saved["dmd"])
    draw.sampler.load_state_dict(saved["sampler"])


def _sampler_model(state: DMDState) -> torch.nn.Module:
    """The model the benchmark scores: the EMA when there is one (DESIGN §7: never the best iterate)."""
    return state.ema if state.ema is not None else state.student


def _score(world: World, state: DMDState, recipe: Recipe, items: int) -> dict[str, float]:
    model = _sampler_model(state)
    was_training = model.training
    model.eval()
    try:
        gen = student_generator(model, recipe.nfe, recipe.timestep_shift)
        # the benchmark's own seed stays fixed: every trial and every recipe seed sees the same items and noise
        return evaluate(world, gen, EvalConfig(items=items))
    finally:
        model.train(was_training)


def distill(recipe: Recipe, world: World | str = "tiny", on_report: OnReport | None = None,
            resume_from: str | Path | None = None, progress: bool = False) -> DistillResult:
    """Run DMD2 with ``recipe`` in ``world``; see the module docstring for the reporting contract."""
    world = load_world(world) if isinstance(world, str) else world
    accelerator = Accelerator(mixed_precision=recipe.mixed_precision, cpu=not torch.cuda.is_available())
    device = accelerator.device
    torch.manual_seed(recipe.seed)
    # 1. teachers and the step-wise multi-teacher schedule
    teachers = world.load_teachers()
    for teacher in teachers.values():
        teacher.model.to(device)
    schedule = schedule_from_recipe(recipe, teachers)
    # 2. student and fake score start as copies of the base teacher (DMD2)
    config = DMDConfig.from_recipe(recipe, image_shape=(3, world.resolution, world.resolution))
    state = DMDState.from_base(teachers, schedule, config, seed=recipe.seed)
    # 3. the data axes: category mix and T2I:Edit ratio
    draw = _Draw(world, recipe, device)
    if resume_from is not None:
        _restore(state, draw, resume_from)
    save = lambda path: _save(state, draw, recipe, path)  # noqa: E731
    start, logs, stopped = time.perf_counter(), {}, False
    bar = tqdm(total=recipe.steps, initial=state.step, desc="dmd", unit="step", disable=not progress)
    while state.step < recipe.steps:
        # 4. one TTUR cycle (critic_updates fake updates, then the generator update)
        with accelerator.autocast():
            logs = dmd_cycle(state, draw)
        bar.update(1)
        bar.set_postfix(g=f"{logs['loss/generator']:.3f}", f=f"{logs.get('loss/fake', 0):.3f}")
        final = state.step == recipe.steps
        if state.step % recipe.report_every == 0 and not final and on_report is not None:
            # 5. quick benchmark + report; the caller may checkpoint and may stop the run
            metrics = _report_metrics(world, state, draw, recipe, logs, recipe.eval_items_quick, start)
            if on_report(state.step, metrics, save):
                stopped = True
                break
    bar.close()
    # 6. the full benchmark at the end
    metrics = _report_metrics(world, state, draw, recipe, logs, recipe.eval_items, start)
    if on_report is not None and not stopped:
        on_report(state.step, metrics | {"final": 1.0}, save)
    return DistillResult(metrics, _sampler_model(state), state.step, time.perf_counter() - start, stopped)


def _report_metrics(world, state, draw, recipe, logs, items, start) -> dict[str, float]:
    scores = _score(world, state, recipe, items)
    composition = {f"composition/{k}": v for k, v in draw.sampler.composition().items()}
    train = {k: v for k, v in logs.items() if k != "step"}
    return scores | composition | train | {"step": float(state.step), "wall_s": time.perf_counter() - start}


# --- command line -------------------------------------------------------------------------------


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key=value")
        out[key] = yaml.load(value, Loader=YamlLoader)  # the project's YAML dialect (1e-4 is a float)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.distill", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", type=Path, help="recipe YAML (Recipe fields; omitted fields take defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set steps=100 --set category_mix.text=2")
    parser.add_argument("--world", default="tiny", help="world name (default: the embedded tiny world)")
    parser.add_argument("--resume-from", type=Path, help="checkpoint folder written by a previous run")
    parser.add_argument("--save", type=Path, help="write the final checkpoint (student, fake, state) here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        base = yaml.load(args.recipe.read_text(), Loader=YamlLoader) if args.recipe else {}
        recipe = Recipe.from_params(base or {}, _parse_set(args.set))
    except (OSError, ValueError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    saver = {}
    try:
        result = distill(recipe, args.world, on_report=lambda s, m, save: saver.update(save=save),
                         resume_from=args.resume_from, progress=True)
    except DivergedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.save and "save" in saver:
        saver["save"](args.save)
    keys = ("score", "t2i_score", "edit_score", "adherence", "purity", "diversity", "fd", "samples_per_s")
    print(json.dumps({"steps": result.steps, "wall_s": round(result.wall_s, 1),
                      **{k: round(result.metrics[k], 4) for k in keys if k in result.metrics}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
