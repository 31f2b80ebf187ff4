"""CLI: promote a sweep's winning recipe to a full-length run.

    python -m orchestrator.promote runs/task_ratio [--pick knee|best|best:<metric>|trial:<id>] [--steps N]
                                                   [--seeds K] [--top M] [--force] [--spec PATH]
                                                   [--tracking-uri URI]

1. Read the sweep (runs/<name>: sweep.json, trials.parquet and its spec) and rank its finished trials
   by the pick rule (orchestrator/promote/pick.py): knee of the Pareto front, best on a metric, or one trial.
2. With --seeds K > 1, re-run the top M candidates at the sweep's trial length with K training seeds
   each, print mean ± std per candidate, and go on with the leader only if its lead beats the seed
   noise; otherwise stop with status 3 (promote the leader anyway with --force).
3. Distil the recipe for N generator steps (progress bar), logged to MLflow as its own run in the
   sweep's experiment (role=promotion, lineage tags, the recipe as params, every report as metrics).
4. Save the student (diffusers safetensors) under runs/<name>/promoted/<run id>/ and register it in
   the MLflow model registry as `<name>-student` (a new version per promotion).
5. Print student vs teacher@50 vs teacher@nfe scores and the sampling speedup.

Defaults come from the spec's `promote:` section; flags override. The MLflow store is --tracking-uri,
else $MLFLOW_TRACKING_URI, else the sweep's spec.yaml (which names the store the sweep used), else
sqlite:///mlflow.db. The trials' checkpoints are read where the sweep kept them (sweep.json's storage). Exit status: 0 promoted; 1 the full
run diverged; 2 a problem with the input (one line on stderr, nothing written); 3 the seed check was
not decisive; 130 interrupted (the MLflow run ends KILLED and no student folder is left).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator import confirm
from orchestrator.cli_types import positive_int
from orchestrator.promote.pick import candidates, pick_metric
from orchestrator.promote.run import SHOWN, TEACHER_NFE, full_run
from orchestrator.promote.seeds import SeedCheck, SeedStats, run_seeds, seed_check
from orchestrator.promote.source import PromoteError, Sweep, open_sweep
from orchestrator.promote.tracker import Lineage, PromotionTracker
from orchestrator.spec import Promote
from orchestrator.tracking.store import tracking_uri
from orchestrator.yamlio import SpecError
from trainers.distill import distill
from trainers.divergence import DivergedError
from trainers.recipe import Recipe
from trainers.world import shared_world

EXIT_OK, EXIT_DIVERGED, EXIT_INPUT, EXIT_NOT_DECISIVE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.promote", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", type=Path, help="the sweep's run folder, e.g. runs/task_ratio")
    parser.add_argument(
        "--pick", help="knee | best | best:<metric> | trial:<id> (default: the spec's promote.pick)"
    )
    parser.add_argument("--steps", type=int, help="generator steps of the full run (default: promote.steps)")
    parser.add_argument(
        "--seeds", type=int, help="> 1: re-run the top candidates with K seeds first (default: promote.seeds)"
    )
    parser.add_argument("--top", type=int, help="candidates the seed check re-runs (default: promote.top)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="promote the seed check's leader even when its lead is within the noise",
    )
    parser.add_argument("--spec", type=Path, help="the sweep's spec, when the run folder keeps no spec.yaml")
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="the sweep's MLflow store (default: MLFLOW_TRACKING_URI, else the spec's tracking.uri, else sqlite:///mlflow.db)",
    )
    return parser.parse_args(argv)


def settings(sweep: Sweep, args: argparse.Namespace) -> Promote:
    """The spec's promote section with the given flags, validated by the same model as the spec."""
    given = {k: getattr(args, k) for k in ("pick", "steps", "seeds", "top") if getattr(args, k) is not None}
    try:
        return Promote.model_validate(sweep.spec.promote.model_dump() | given)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise PromoteError(f"--{error['loc'][0]} {given.get(error['loc'][0])}: {error['msg']}") from None


def promote(args: argparse.Namespace, console: Console) -> int:
    """Steps 1-5 of the module docstring; returns the exit status."""
    sweep = open_sweep(args.run_dir, args.spec)
    config = settings(sweep, args)
    ranked = candidates(sweep, config.pick)
    tracker = PromotionTracker.open(tracking_uri(args.tracking_uri, sweep.spec.tracking.uri), sweep.spec.name)
    if args.threads:
        torch.set_num_threads(args.threads)
    console.print(
        f"{sweep.spec.name}: {len(sweep.finished())} finished trials; --pick {config.pick} -> {_describe(sweep, ranked[0])}"
    )
    if not sweep.confirmed().is_empty() and not config.pick.startswith("trial:"):
        verdict = confirm.judge(sweep.confirmed(), *confirm.ranking_metric(sweep.spec))
        console.print(f"ranked by the sweep's confirmation stage (means over new seeds); {verdict.text()}")
    chosen, check = ranked[0], None
    if config.seeds > 1 and config.pick.startswith("trial:"):
        console.print("no seed check: trial:<id> names the trial to promote")
    elif config.seeds > 1:
        check = _seed_check(sweep, ranked[: config.top], config, tracker, console)
        if not check.decisive and not args.force:
            console.print(
                "not promoting: the leader's lead is within the seed noise (--force promotes it anyway)"
            )
            return EXIT_NOT_DECISIVE
        chosen = next(row for row in ranked if row["trial_id"] == check.leader.trial_id)
    recipe = Recipe.from_params(sweep.recipe(chosen, tracker.client).model_dump(), {"steps": config.steps})
    verdict = "none" if check is None else "decisive" if check.decisive else "forced"
    lineage = Lineage(
        sweep.spec.name,
        sweep.sweep_id,
        chosen["trial_id"],
        chosen.get("mlflow_run_id") or "",
        config.pick,
        verdict,
    )
    card = full_run(sweep, recipe, lineage, tracker, check, console)
    _print_final(card, recipe, console)
    return EXIT_OK


def _describe(sweep: Sweep, row: dict[str, Any]) -> str:
    params = ", ".join(f"{k}={_fmt(row[k])}" for k in sweep.param_columns if row.get(k) is not None)
    metrics = "  ".join(f"{m}={row[m]:.4f}" for m in _metrics(sweep) if row.get(m) is not None)
    return f"trial {row['trial_id']} ({params})  {metrics}"


def _metrics(sweep: Sweep) -> list[str]:
    """The objectives, then score."""
    return list(dict.fromkeys([o.metric for o in sweep.spec.objectives] + ["score"]))


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _seed_check(
    sweep: Sweep, top: list[dict[str, Any]], config: Promote, tracker: PromotionTracker, console: Console
) -> SeedCheck:
    """Re-run the top candidates with config.seeds seeds at the sweep's trial length; print the table and verdict."""
    world = shared_world(sweep.spec.world.name, sweep.spec.world.options)
    recipes = {row["trial_id"]: sweep.recipe(row, tracker.client) for row in top}
    console.print(
        f"seed check: top {len(recipes)} candidates × {config.seeds} seeds at the sweep's trial length"
    )

    def distil(trial_id: str, recipe: Recipe) -> dict[str, float]:
        console.print(f"  trial {trial_id} seed {recipe.seed}: {recipe.steps} steps")
        return distill(recipe, world, progress=True).metrics

    stats = run_seeds(recipes, config.seeds, distil)
    check = seed_check(stats, *pick_metric(sweep, config.pick))
    _print_seed_check(sweep, top, stats, check, console)
    return check


def _print_seed_check(
    sweep: Sweep, top: list[dict[str, Any]], stats: list[SeedStats], check: SeedCheck, console: Console
) -> None:
    """Each candidate's mean ± std per seed, the leader marked, then the verdict in one line."""
    metric, seeds = check.metric, len(check.leader.runs)
    shown = list(dict.fromkeys(_metrics(sweep) + [metric]))
    table = Table(box=box.SIMPLE_HEAD, title=f"seed check: mean ± std over {seeds} seeds (pick metric {metric})")
    for column in ["", "trial", *sweep.param_columns, *shown]:
        table.add_column(column, justify="left" if column in ("", "trial") else "right", no_wrap=True)
    for rank, (row, stat) in enumerate(zip(top, stats, strict=True), start=1):
        mark = "leader" if stat is check.leader else f"#{rank}"
        params = [_fmt(row.get(k)) for k in sweep.param_columns]
        table.add_row(
            mark, stat.trial_id, *params, *(f"{stat.mean(m):.4f} ± {stat.std(m):.4f}" for m in shown)
        )
    console.print(table)
    if check.runner_up is None:
        console.print("one candidate: nothing to compare it with")
    else:
        relation = ">" if check.decisive else "<="
        console.print(
            f"leader {check.leader.trial_id} leads {check.runner_up.trial_id} on {metric} by {check.lead:.4f} "
            f"{relation} seed noise {check.noise:.4f} (the larger seed std of the two)"
        )


def _print_final(card: dict[str, Any], recipe: Recipe, console: Console) -> None:
    models = card["scores"]
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"{card['name']}: promoted student vs teacher ({card['benchmark_items']} items)",
    )
    shown = [k for k in SHOWN if k in models["student"]]
    for column in ["model", "NFE", *shown, "ms/sample"]:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    nfes = {"student": recipe.nfe, f"teacher@{TEACHER_NFE}": TEACHER_NFE, f"teacher@{recipe.nfe}": recipe.nfe}
    for name, values in models.items():
        label = name if name == "student" else f"{name} (CFG {recipe.guidance_scale:g})"
        table.add_row(
            label, str(nfes[name]), *(f"{values[k]:.4f}" for k in shown), f"{values['ms_per_sample']:.2f}"
        )
    console.print(table)
    console.print(
        f"speedup: {card['speedup']:.1f}× per sample ({recipe.nfe}-NFE student vs {TEACHER_NFE}-step CFG teacher)"
    )
    console.print(f"saved {card['folder']}")
    console.print(
        f"registered {card['name']} version {card['version']} (MLflow run {card['lineage']['promotion_run_id']})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; always exits with one of the statuses of the module docstring."""
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns and elide values
        console = Console(width=160)
    try:
        code = promote(args, console)
    except SpecError as exc:
        print(f"{exc.file}: {len(exc.problems)} problem(s) in the sweep spec:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.render(exc.file)}", file=sys.stderr)
        code = EXIT_INPUT
    except PromoteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_INPUT
    except DivergedError as exc:
        print(f"error: the full run diverged, nothing promoted: {exc}", file=sys.stderr)
        code = EXIT_DIVERGED
    except KeyboardInterrupt:
        print("interrupted: nothing promoted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(code)
