"""How noisy is one trial? Training-seed spread, evaluation SE, and how well an ASHA rung predicts the end.

    python -m benchmarks.recipe_noise [--spec search_spaces/task_ratio.yaml] [--seeds 4] [--micro]

The figures behind the noise-aware defaults (the confirmation stage's seeds, `eval_items_quick`):

1. **Seed noise.** The spec's base recipe trained with seeds 0..S-1 at the spec's trial length and
   scored on the full benchmark: the sample std over seeds of `score`, `t2i_score`, `edit_score`.
2. **Evaluation SE.** The bootstrap SE the world reports for one evaluation (`score_se`), at the
   spec's `eval_items` (final reports) and at each quick size (rung reports).
3. **Rung noise.** Every value of the spec's one searched axis (a float with a step, or a grid),
   trained with seed 0; the student at each report step (an ASHA rung) is scored at every quick size
   in --quick-items and ranked against the final full-benchmark scores (Spearman). ASHA's rung
   decisions are only as good as this correlation.

Everything is one process with --threads torch threads; prints one JSON line (stderr: progress).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from benchmarks.dmd_step import add_world_args, open_world
from orchestrator.spec import load_spec
from trainers.checkpoint import load_into
from trainers.distill import distill, parse_assignments
from trainers.evaluate import EvalConfig, evaluate, student_generator
from trainers.recipe import Recipe
from trainers.sampling import StudentScheduler

SCORES = ("score", "t2i_score", "edit_score")


def axis_values(spec) -> tuple[str, list[float]]:
    """The one searched field and its values (float with a step, int, or grid)."""
    if len(spec.search) != 1:
        raise SystemExit(f"error: the spec searches {len(spec.search)} fields; this benchmark needs one")
    (field, entry), = spec.search.items()
    if hasattr(entry, "values"):
        return field, list(entry.values)
    low, high = entry.bounds
    step = getattr(entry, "step", None) or 1
    return field, [round(v, 10) for v in np.arange(low, high + step / 2, step)]


def train(recipe: Recipe, world, rung_dir: Path) -> tuple[dict[str, float], dict[int, Path], list[dict]]:
    """Distil; keep a checkpoint at every intermediate report (a rung). Final metrics, rung folders, quick reports."""
    rungs, quick = {}, []

    def on_report(step: int, metrics: dict, save) -> bool:
        if not metrics.get("final"):
            rungs[step] = save(rung_dir / f"step-{step}")
            quick.append(metrics)
        return False

    result = distill(recipe, world, on_report)
    return result.metrics, rungs, quick


def rung_scores(recipe: Recipe, world, student: torch.nn.Module, folder: Path,
                sizes: list[int]) -> dict[int, tuple[float, float]]:
    """(score, score_se) of the rung's student (its EMA when on, as the sweep scores it) at each benchmark size."""
    load_into(student, folder / ("ema" if (folder / "ema").is_dir() else "student"))
    student.eval()
    generate = student_generator(student, StudentScheduler.from_recipe(recipe))
    out = {}
    for n in sizes:
        scores = evaluate(world, generate, EvalConfig(items=n))
        out[n] = (scores["score"], scores["score_se"])
    return out


def spearman(a: list[float], b: list[float]) -> float:
    frame = pl.DataFrame({"a": a, "b": b})
    return float(frame.select(pl.corr("a", "b", method="spearman")).item())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe_noise", description=__doc__.splitlines()[0])
    add_world_args(parser)
    parser.add_argument("--spec", default="search_spaces/task_ratio.yaml", help="sweep spec: base recipe and axis")
    parser.add_argument("--seeds", type=int, default=4, help="training seeds of the base recipe (≥ 2)")
    parser.add_argument("--quick-items", default="64,128,256", help="rung benchmark sizes to compare")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be ≥ 2 (a std needs two)")
    torch.set_num_threads(args.threads)
    spec = load_spec(args.spec)
    base = dict(spec.base) | parse_assignments(args.set, "--set")
    sizes = [int(n) for n in args.quick_items.split(",")]
    world = open_world(args)
    field, values = axis_values(spec)
    start = time.perf_counter()
    seed_runs, finals, rungs_by_value, reload_gap = [], {}, {}, 0.0
    with tempfile.TemporaryDirectory(prefix="recipe-noise-") as tmp:
        jobs = [({}, seed) for seed in range(args.seeds)] + [({field: v}, 0) for v in values]
        for change, seed in jobs:
            recipe = Recipe.from_params(base, {**change, "seed": seed})
            label = f"{field}={getattr(recipe, field)} seed={seed}"
            print(f"{label}: distilling {recipe.steps} steps ...", file=sys.stderr)
            folder = Path(tmp) / label.replace(" ", "_")
            metrics, rungs, quick = train(recipe, world, folder)
            if not change:
                seed_runs.append(metrics)
            if change:
                value = getattr(recipe, field)
                finals[value] = metrics["score"]
                student = distill_student(recipe, world)
                rungs_by_value[value] = {step: rung_scores(recipe, world, student, path, sizes)
                                         for step, path in rungs.items()}
                # the reloaded rung student must score what the run itself reported at that rung
                n_quick = recipe.eval_items_quick
                if n_quick in sizes:
                    reload_gap = max(reload_gap, *(abs(q["score"] - rungs_by_value[value][int(q["step"])][n_quick][0])
                                                   for q in quick))
    steps = sorted(next(iter(rungs_by_value.values())))
    base_items = Recipe.from_params(base, {}).eval_items
    order = sorted(finals)
    correlation = {f"step{step}": {f"items{n}": round(spearman([rungs_by_value[v][step][n][0] for v in order],
                                                                [finals[v] for v in order]), 3)
                                   for n in sizes} for step in steps}
    seed = {m: {"mean": round(statistics.fmean(r[m] for r in seed_runs), 4),
                "std": round(statistics.stdev(r[m] for r in seed_runs), 4)} for m in SCORES}
    out = {
        "spec": args.spec, "micro": args.micro, "steps": Recipe.from_params(base, {}).steps, "seeds": args.seeds,
        "seed_noise": seed,
        # score_se of one evaluation: the final one (seed runs) and the rung ones, mean over evaluations
        "eval_se": {f"items{base_items}": round(statistics.fmean(r["score_se"] for r in seed_runs), 4)}
        | {f"items{n}": round(statistics.fmean(by_n[n][1] for v in order for by_n in rungs_by_value[v].values()), 4)
           for n in sizes},
        "axis": field, "final_score": {str(v): round(finals[v], 4) for v in order},
        "rung_score": {str(v): {f"step{s}": {f"items{n}": round(x[0], 4) for n, x in by_n.items()}
                                for s, by_n in rungs_by_value[v].items()} for v in order},
        "rung_vs_final_spearman": correlation,
        "reload_gap": reload_gap,  # |rung score reloaded - as reported|: 0 when the rung students are the run's
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out))


def distill_student(recipe: Recipe, world) -> torch.nn.Module:
    """A model of the student's class to load rung weights into (the base teacher's architecture)."""
    import copy

    return copy.deepcopy(world.load_teachers()["base"].model)


if __name__ == "__main__":
    main()
