"""DMD cycle cost: one generator cycle (TTUR included) vs the sum of its model passes timed alone.

    python -m benchmarks.dmd_step [--micro] [--batch 16] [--critic-updates 5] [--repeats 5] [--threads 1]

Every model call of a cycle (student backward simulation, fake-score updates, CFG teachers, fake
score in the DM loss) is recorded with its real inputs, then replayed alone: forward only under
no_grad, forward + backward where the cycle had gradients. ``ratio`` = cycle / Σ passes (goal ≤ 1.10:
the loop's glue, data draws and optimiser steps cost little); optimiser steps and data draws are
timed alone too. Every timed cycle repeats the recorded one's batches and random draws.
``ratio_in_cycle`` times the same passes inside the cycle instead (forward hooks, ``backward()``):
replays alone run with warm caches and fresh gradient buffers, so the two bracket the loop's cost;
``glue_s`` is the cycle's time outside every pass. Prints one JSON line (medians: this machine kind has transient slowdowns).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainers.distill import parse_assignments, prepare
from trainers.dmd import dmd_cycle
from trainers.recipe import Recipe
from trainers.world import World, load_world


def add_world_args(parser: argparse.ArgumentParser) -> None:
    """--micro / --world-option, shared by the benchmarks."""
    parser.add_argument("--micro", action="store_true",
                        help="smoke test: micro teachers trained for 4 steps (built in a temp dir) and micro pools")
    parser.add_argument("--world-option", action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument of the tiny world, e.g. checkpoints=PATH")


def open_world(args: argparse.Namespace) -> World:
    """The real tiny world by default; with --micro, micro teachers built into a temp dir (removed at exit)."""
    options = parse_assignments(args.world_option, "--world-option")
    if args.micro:
        import atexit

        from trainers.tinyworld.pretrain import MICRO_WORLD, build_micro_checkpoints

        tmp = Path(tempfile.mkdtemp(prefix="micro_world."))
        atexit.register(shutil.rmtree, tmp, True)
        print("building micro teachers ...", file=sys.stderr)
        options = {"checkpoints": build_micro_checkpoints(tmp), **MICRO_WORLD, **options}
    return load_world("tiny", **options)


def median_s(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class CallRecorder:
    """Forward pre-hooks that keep (model, inputs, grad mode) of every call while ``on``."""

    def __init__(self, models: list[torch.nn.Module]):
        self.on, self.calls = False, []
        for model in models:
            model.register_forward_pre_hook(self._hook)

    def _hook(self, model, args):
        if self.on:
            self.calls.append((model, tuple(a.detach() if a is not None else None for a in args),
                               torch.is_grad_enabled()))


class InCycleTimer:
    """Seconds spent inside the models' forward calls and inside ``backward()`` while ``on``.

    The rest of a cycle is the loop's own glue (loss maths, clipping, finiteness checks, optimiser
    steps, EMA); unlike replays, these timings share the cycle's caches and allocator state.
    """

    def __init__(self, models: list[torch.nn.Module]):
        self.on, self.seconds, self._start = False, 0.0, 0.0
        for model in models:
            model.register_forward_pre_hook(self._pre)
            model.register_forward_hook(self._post)

    def _pre(self, model, args):
        self._start = time.perf_counter()

    def _post(self, model, args, output):
        if self.on:
            self.seconds += time.perf_counter() - self._start

    def run(self, fn: Callable[[], None]) -> tuple[float, float]:
        """(wall seconds of fn, seconds of it inside forward and backward passes)."""
        backward = torch.Tensor.backward

        def timed_backward(tensor, *args, **kwargs):
            start = time.perf_counter()
            backward(tensor, *args, **kwargs)
            self.seconds += time.perf_counter() - start

        self.on, self.seconds = True, 0.0
        torch.Tensor.backward = timed_backward
        try:
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start, self.seconds
        finally:
            torch.Tensor.backward = backward
            self.on = False


def replay_s(model: torch.nn.Module, args: tuple, grad: bool, repeats: int) -> float:
    """Median seconds of one recorded call alone: forward (no_grad) or forward + backward."""

    def call():
        if not grad:
            with torch.no_grad():
                model(*args)
            return
        model.zero_grad(set_to_none=True)
        model(*args).sum().backward()

    return median_s(call, repeats)


def repeatable_cycle(state, draw) -> Callable[[], None]:
    """One generator cycle, repeatable: the same data batches and the same random draws every call.

    A cycle's work depends on its draws (the backward simulation's step count, each batch's T2I and
    edit rows), so the timed cycles and the replayed passes must come from the same draws.
    """
    rng_state = state.rng.get_state()
    batches = [draw() for _ in range((state.config.critic_updates + 1) * state.config.grad_accum)]

    def cycle() -> None:
        state.rng.set_state(rng_state)
        feed = iter(batches)
        dmd_cycle(state, lambda: next(feed))

    return cycle


def measure(recipe: Recipe, world: World, repeats: int) -> dict[str, float]:
    state, draw = prepare(recipe, world)
    models = [state.student, state.fake] + [t.model for t in state.teachers.values()]
    recorder, timer = CallRecorder(models), InCycleTimer(models)
    cycle = repeatable_cycle(state, draw)
    cycle_s = median_s(cycle, repeats)
    in_cycle = sorted(timer.run(cycle) for _ in range(repeats))[repeats // 2]  # the median cycle's split
    recorder.on = True
    cycle()  # the timed cycle's calls, for the replay
    recorder.on = False
    passes_s = sum(replay_s(m, args, grad, repeats) for m, args, grad in recorder.calls)
    updates = recipe.critic_updates + 1
    optimiser_s = (recipe.critic_updates * median_s(state.opt_fake.step, repeats)
                   + median_s(state.opt_student.step, repeats))
    draw_s = updates * recipe.grad_accum * median_s(draw, repeats)
    return {
        "cycle_s": round(cycle_s, 4),
        "passes_s": round(passes_s, 4),
        "ratio": round(cycle_s / passes_s, 3),
        "goal_ratio": 1.10,
        "optimiser_s": round(optimiser_s, 4),
        "draw_s": round(draw_s, 4),
        "ratio_with_optimiser_and_draws": round(cycle_s / (passes_s + optimiser_s + draw_s), 3),
        "in_cycle_passes_s": round(in_cycle[1], 4),
        "ratio_in_cycle": round(in_cycle[0] / in_cycle[1], 3),
        "glue_s": round(in_cycle[0] - in_cycle[1], 4),
        "model_calls": len(recorder.calls),
        "generator_steps_per_s": round(1.0 / cycle_s, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dmd_step", description=__doc__.splitlines()[0])
    add_world_args(parser)
    parser.add_argument("--batch", type=int, default=16, help="recipe batch_size")
    parser.add_argument("--critic-updates", type=int, default=5, help="TTUR fake-score updates per generator update")
    parser.add_argument("--nfe", type=int, default=4, help="student steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one per trial in a sweep)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = Recipe(batch_size=args.batch, critic_updates=args.critic_updates, nfe=args.nfe)
    result = measure(recipe, open_world(args), args.repeats)
    print(json.dumps({"batch": args.batch, "critic_updates": args.critic_updates, "nfe": args.nfe,
                      "threads": args.threads, "micro": args.micro, **result}))


if __name__ == "__main__":
    main()
