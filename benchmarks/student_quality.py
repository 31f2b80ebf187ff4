"""Does DMD work? The distilled student vs the teacher at the same NFE and at 50 NFE, over seeds.

    python -m benchmarks.student_quality [--micro] [--nfe 4] [--seeds 3] [--steps 20] [--set KEY=VALUE ...]

For each training seed, distil with the default recipe (plus --set overrides) for --steps generator
steps (default sized for ≤ 2 minutes on 2 cores), and score the student (its EMA when on) on the
full fixed-seed benchmark. The teacher is scored on the same items and noise (common random
numbers) at --nfe Euler steps and at 50, both with the recipe's CFG scale (part of the student's gain
is CFG baked in, so teacher@nfe is compared with CFG). The claim checked (issue 4): student score >
teacher@nfe + the seeds' std, ≥ 0.9 × teacher@50, and diversity ≥ 0.8 × teacher@50's.
Prints one JSON line with mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from benchmarks.dmd_step import add_world_args, open_world
from trainers.distill import distill, parse_assignments
from trainers.evaluate import EvalConfig, evaluate_teacher
from trainers.recipe import Recipe

METRICS = ("score", "t2i_score", "edit_score", "adherence", "adherence_all", "purity", "diversity",
           "edit_adherence", "preservation", "fd")


def summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and (sample) std over runs of each metric."""
    out = {}
    for key in METRICS:
        values = [r[key] for r in runs]
        out[key] = {"mean": round(statistics.fmean(values), 4),
                    "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.student_quality",
                                     description=__doc__.splitlines()[0])
    add_world_args(parser)
    parser.add_argument("--nfe", type=int, default=4, help="student steps (also try 2 and 1)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 (mean ± std)")
    parser.add_argument("--steps", type=int, default=20, help="generator steps per run (20 ≈ 70 s on 2 cores)")
    parser.add_argument("--items", type=int, default=1024, help="benchmark items (≥ 1,000: s.e. ≈ 0.005)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. --set guidance_scale=2 --set ema_decay=0.9")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    world = open_world(args)
    base = {"nfe": args.nfe, "steps": args.steps, "report_every": args.steps, "eval_items": args.items,
            "eval_items_quick": min(256, args.items)} | parse_assignments(args.set, "--set")
    if args.seeds < 1:
        parser.error("--seeds must be ≥ 1")
    recipe = Recipe.from_params(base, {})  # validated once, before any training
    students, wall = [], []
    for seed in range(args.seeds):
        recipe = Recipe.from_params(base, {"seed": seed})
        print(f"seed {seed}: distilling {recipe.steps} steps ...", file=sys.stderr)
        start = time.perf_counter()
        students.append(distill(recipe, world).metrics)
        wall.append(time.perf_counter() - start)
    config, teacher = EvalConfig(items=args.items), world.load_teachers()["base"].model
    references = {f"teacher@{n}": evaluate_teacher(world, teacher, n, config, recipe.guidance_scale,
                                                   recipe.timestep_shift) for n in (args.nfe, 50)}
    student = summary(students)
    at_nfe, at_50 = (references[f"teacher@{n}"] for n in (args.nfe, 50))
    out = {"nfe": args.nfe, "steps": args.steps, "seeds": args.seeds, "items": args.items, "micro": args.micro,
           "guidance_scale": recipe.guidance_scale, "distill_wall_s": round(statistics.fmean(wall), 1),
           "student": student, **{name: {k: round(v[k], 4) for k in METRICS} for name, v in references.items()},
           "claim": {
               "above_teacher_nfe_by_more_than_seed_std":
                   student["score"]["mean"] - at_nfe["score"] > student["score"]["std"],
               "score_over_teacher50": round(student["score"]["mean"] / at_50["score"], 3),
               "diversity_over_teacher50": round(student["diversity"]["mean"] / at_50["diversity"], 3),
           }}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
