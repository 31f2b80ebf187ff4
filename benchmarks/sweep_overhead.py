"""What the sweep engine adds on top of the trials' own compute, and what the shared caches save.

    python -m benchmarks.sweep_overhead SPEC [--scheduler spec|fifo] [--runs-dir DIR] [--repeats 3]

Prints one JSON line:
- `overhead_ratio` = sweep wall time / (Σ trial compute / concurrency), where a trial's compute is
  its own running time as Ray measures it (`wall_s` in trials.parquet, Ray's time_total_s). Goal
  ≤ 1.05 on default-length trials; on micro trials Ray's fixed costs (start-up, worker processes)
  dominate. Split into `fixed_s` (wall time outside the span from the first trial's start to the
  last one's end) and `idle_slot_s` (slot seconds inside that span with no trial: hand-overs, and
  the tail where one trial runs alone).
- `packing_ratio` = the makespan of the same trials, started in the same order on the same slots
  with no cost between them (each starts the moment a slot frees), / (Σ trial compute /
  concurrency): what the trials' lengths alone cost. With ASHA, stopped trials are short and the
  last promoted one often runs alone at the end; no engine can fill that slot, since which trials
  stop is only known at run time and this sweep has no further trial to start.
- `engine_ratio` = sweep wall time / that makespan: what the engine itself adds (Ray start, trial
  hand-overs, tracking, tables). `overhead_ratio` = `packing_ratio` × `engine_ratio`.
- `--scheduler fifo` runs every trial to its full, default length (the spec's scheduler off), so
  that packing costs nothing and `overhead_ratio` measures the engine alone.
- `startup_ratio` = per-trial start-up with the worker's shared caches (world, teachers, evaluation
  sets already built by an earlier trial in the same process) / a naive start (everything built
  again). Start-up is what a trial pays besides its DMD steps and evaluations: the DMD state
  (`trainers.distill.prepare`: teachers, student and fake-score copies, optimisers, batch draw) and the
  quick and full evaluation sets (held-out prompts encoded, edit sources rendered, noise drawn).
  Goal ≤ 1/3. Medians over repeats (this machine has transient slowdowns, DESIGN §10).

The sweep runs in a fresh run dir (`--runs-dir`, default a temporary folder) and, unless the spec
names a tracking URI, a fresh MLflow store beside it, as on a new user's first sweep.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from orchestrator.spec import SweepSpec, load_spec
from orchestrator.sweep.engine import run_sweep
from trainers.distill import prepare
from trainers.evaluate import EvalConfig, build_eval_set, cached_eval_set
from trainers.world import load_world, shared_world


def _start(world, recipe, shared: bool) -> None:
    """A trial's start-up: its DMD state and its two evaluation sets (cached per process when shared)."""
    prepare(recipe, world)
    build = cached_eval_set if shared else build_eval_set
    for items in (recipe.eval_items_quick, recipe.eval_items):
        build(world, EvalConfig(items=items))


def startup_seconds(spec: SweepSpec, repeats: int) -> tuple[float, float]:
    """(naive, shared) median start-up seconds of a trial in a worker process."""
    recipe = spec.base_recipe
    naive, shared = [], []
    _start(shared_world(spec.world.name, spec.world.options), recipe, shared=True)  # an earlier trial
    for _ in range(repeats):
        t = time.perf_counter()
        _start(load_world(spec.world.name, **spec.world.options), recipe, shared=False)  # nothing shared
        naive.append(time.perf_counter() - t)
        t = time.perf_counter()
        _start(shared_world(spec.world.name, spec.world.options), recipe, shared=True)
        shared.append(time.perf_counter() - t)
    return statistics.median(naive), statistics.median(shared)


def zero_cost_makespan(starts: list[float], walls: list[float], slots: int) -> float:
    """Makespan of trials run in start order on ``slots`` slots, each starting as soon as one frees."""
    free = [0.0] * slots
    for _, wall in sorted(zip(starts, walls, strict=True)):
        slot = free.index(min(free))
        free[slot] += wall
    return max(free)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("spec", type=Path, help="sweep spec, e.g. search_spaces/task_ratio.yaml")
    parser.add_argument("--runs-dir", type=Path, default=None, help="run folder root (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the start-up measurement")
    parser.add_argument("--scheduler", choices=["spec", "fifo"], default="spec",
                        help="the spec's early stopping, or fifo: every trial runs its full length")
    parser.add_argument("--startup-only", action="store_true", help="measure the start-up only, no sweep")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = load_spec(args.spec)
    if args.scheduler == "fifo":
        spec = spec.model_copy(update={"scheduler": None})
    naive, shared = startup_seconds(spec, args.repeats)
    startup = {
        "startup_naive_s": round(naive, 3),
        "startup_shared_s": round(shared, 3),
        "startup_ratio": round(shared / naive, 3) if naive else None,
    }
    if args.startup_only:
        print(json.dumps({"spec": spec.name, **startup}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if spec.tracking.uri is None:  # not the working directory's mlflow.db
            tracking = spec.tracking.model_copy(update={"uri": f"sqlite:///{Path(tmp) / 'mlflow.db'}"})
            spec = spec.model_copy(update={"tracking": tracking})
        outcome = run_sweep(spec, runs_dir=args.runs_dir or Path(tmp) / "runs")
    trials = outcome.tables.trials
    compute = float(trials["wall_s"].sum())  # Ray's time_total_s of each trial
    ideal = compute / spec.budget.concurrent
    # Where the excess goes: fixed costs outside the trials' span (Ray start, tables, MLflow) and slot
    # time left idle inside it (between trials, and the tail when fewer trials than slots remain).
    span = float((trials["started_at"] + trials["wall_s"]).max() - trials["started_at"].min())
    packed = zero_cost_makespan(trials["started_at"].to_list(), trials["wall_s"].to_list(), spec.budget.concurrent)
    print(json.dumps({
        "spec": spec.name,
        "scheduler": spec.scheduler.name if spec.scheduler else "fifo",
        "trials": trials.height,
        "stopped_early": int((trials["status"] == "STOPPED").sum()),
        "concurrency": spec.budget.concurrent,
        "sweep_wall_s": round(outcome.wall_s, 1),
        "sum_trial_s": round(compute, 1),
        "overhead_ratio": round(outcome.wall_s / ideal, 3) if ideal else None,
        "packing_ratio": round(packed / ideal, 3) if ideal else None,
        "engine_ratio": round(outcome.wall_s / packed, 3) if packed else None,
        "trials_span_s": round(span, 1),
        "fixed_s": round(outcome.wall_s - span, 1),
        "idle_slot_s": round(spec.budget.concurrent * span - compute, 1),
        **startup,
    }))


if __name__ == "__main__":
    main()
