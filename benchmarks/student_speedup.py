"""Sampling speed: per-sample wall time of the few-step DMD student vs the 50-step CFG teacher.

    python -m benchmarks.student_speedup [--micro] [--student DIR | --steps 30] [--items 256] [--batch 64]

The student is a diffusers folder (``student/`` or ``ema/`` of a distill checkpoint) or, without
--student, the result of a short distillation with the default recipe (--steps). Both samplers run
on the same benchmark batch (--batch items) with the same noise; per-sample time is the median over
--repeats of one batch divided by its size. Goal: ≥ 20× (the NFE ratio is 2·50/4 = 25×). Scores
are the fixed-seed benchmark on --items items. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from benchmarks.dmd_step import add_world_args, open_world
from trainers.checkpoint import load_model
from trainers.distill import distill
from trainers.evaluate import (
    EvalConfig,
    build_eval_set,
    evaluate,
    ms_per_sample,
    student_generator,
    teacher_generator,
)
from trainers.models import FlowModel
from trainers.recipe import Recipe
from trainers.sampling import StudentScheduler

SCORES = ("score", "t2i_score", "edit_score", "adherence", "purity", "diversity")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.student_speedup",
                                     description=__doc__.splitlines()[0])
    add_world_args(parser)
    parser.add_argument("--student", help="student diffusers folder; default: distil one for --steps")
    parser.add_argument("--steps", type=int, default=20, help="generator steps of the quick distillation")
    parser.add_argument("--nfe", type=int, default=4, help="student steps")
    parser.add_argument("--teacher-nfe", type=int, default=50, help="teacher Euler steps (CFG: 2 calls each)")
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="teacher CFG scale")
    parser.add_argument("--batch", type=int, default=64, help="items per timed batch")
    parser.add_argument("--items", type=int, default=256, help="benchmark items for the scores")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    world = open_world(args)
    teacher = world.load_teachers()["base"].model
    if args.student:
        student = load_model(FlowModel, args.student)
    else:
        print(f"distilling a {args.nfe}-NFE student for {args.steps} steps ...", file=sys.stderr)
        recipe = Recipe(nfe=args.nfe, steps=args.steps, report_every=args.steps, eval_items=8, eval_items_quick=8)
        student = distill(recipe, world).student.eval()
    samplers = {"student": student_generator(student, StudentScheduler(args.nfe)),
                "teacher": teacher_generator(teacher, args.teacher_nfe, args.guidance_scale)}
    es = build_eval_set(world, EvalConfig(items=args.batch))
    out = {"nfe": args.nfe, "teacher_nfe": args.teacher_nfe, "batch": min(args.batch, len(es)),
           "threads": args.threads, "micro": args.micro}
    for name, generate in samplers.items():
        out[f"{name}_ms_per_sample"] = round(ms_per_sample(generate, es, args.batch, args.repeats), 3)
    out["speedup"] = round(out["teacher_ms_per_sample"] / out["student_ms_per_sample"], 2)
    out["goal_speedup"] = 20.0
    for name, generate in samplers.items():
        scores = evaluate(world, generate, EvalConfig(items=args.items))
        out |= {f"{name}_{k}": round(scores[k], 4) for k in SCORES}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
