"""What the sweep engine adds on top of the trials' own compute, and what the shared caches save.

    python -m benchmarks.sweep_overhead SPEC [--runs-dir DIR] [--repeats 3]

Prints one JSON line:
- `overhead_ratio` = sweep wall time / (Σ trial compute / concurrency), where a trial's compute is
  trial's own running time as Ray measures it (`wall_s` in trials.parquet, Ray's time_total_s). Goal ≤ 1.05 on default-length trials;
  on micro trials Ray's fixed costs (start-up, worker processes) dominate.
- `startup_ratio` = per-trial start-up with the worker's shared caches (world, teachers, evaluation
  set already built by an earlier trial in the same process) / a naive start (everything built
  again). Goal ≤ 1/3. Medians over repeats (this machine has transient slowdowns, DESIGN §10).

The sweep runs in a fresh run dir (`--runs-dir`, default a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from orchestrator import trial
from orchestrator.spec import SweepSpec, load_spec
from orchestrator.sweep import run_sweep
from trainers.evaluate import EvalConfig, evaluate, student_generator
from trainers.world import load_world


def _start(world, recipe) -> None:
    """What a trial does before its first DMD step that caches can save: teachers, pools, eval set."""
    teachers = world.load_teachers()
    world.prompt_pool("train"), world.edit_pool("train")
    gen = student_generator(teachers["base"].model, recipe.nfe, recipe.timestep_shift)
    evaluate(world, gen, EvalConfig(items=recipe.eval_items_quick))


def startup_seconds(spec: SweepSpec, repeats: int) -> tuple[float, float]:
    """(naive, shared) median start-up seconds of a trial in a worker process."""
    recipe = spec.base_recipe
    naive, shared = [], []
    _start(trial.shared_world(spec.world.name, spec.world.options), recipe)  # an earlier trial warmed it
    for _ in range(repeats):
        t = time.perf_counter()
        _start(load_world(spec.world.name, **spec.world.options), recipe)  # a fresh world object: nothing shared
        naive.append(time.perf_counter() - t)
        t = time.perf_counter()
        _start(trial.shared_world(spec.world.name, spec.world.options), recipe)
        shared.append(time.perf_counter() - t)
    return statistics.median(naive), statistics.median(shared)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("spec", type=Path, help="sweep spec, e.g. search_spaces/task_ratio.yaml")
    parser.add_argument("--runs-dir", type=Path, default=None, help="run folder root (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the start-up measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    naive, shared = startup_seconds(spec, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_sweep(spec, runs_dir=args.runs_dir or Path(tmp) / "runs")
    trials = outcome.tables.trials
    compute = float(trials["wall_s"].sum())  # Ray's time_total_s of each trial
    ideal = compute / spec.budget.concurrent
    print(json.dumps({
        "spec": spec.name,
        "trials": trials.height,
        "concurrency": spec.budget.concurrent,
        "sweep_wall_s": round(outcome.wall_s, 1),
        "sum_trial_s": round(compute, 1),
        "overhead_ratio": round(outcome.wall_s / ideal, 3) if ideal else None,
        "startup_naive_s": round(naive, 3),
        "startup_shared_s": round(shared, 3),
        "startup_ratio": round(shared / naive, 3) if naive else None,
    }))


if __name__ == "__main__":
    main()
