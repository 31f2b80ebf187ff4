"""Search efficiency: anytime hypervolume vs compute for grid, random, TPE and NSGA-II on a small space.

    python -m benchmarks.search_efficiency [--spec benchmarks/search_efficiency.yaml] [--sampler-seeds 20]
        [--cache /tmp/search_efficiency_cache.parquet] [--plot docs/images/search_efficiency.png]
        [--sampler-option nsga2.population_size=5] [--set KEY=VALUE] [--threads 1] [--micro]

Issue #14's question: how much of a grid's compute does a sampler need to find (nearly) the grid's
Pareto front? Goal: the best sampler reaches ≥ 95 % of the grid's final hypervolume with ≤ 40 % of
the grid's compute.

1. **The space** is a sweep spec (default `benchmarks/search_efficiency.yaml`: 5 T2I:Edit ratios ×
   5 teacher-switch steps, T2I vs edit score, both maximised), loaded with the sweep's own loader;
   the define-by-run function, the samplers and the grid are the sweep's own. Every entry is
   discrete (steps), so every proposal is a grid point.
2. **The truth table**: every grid point is trained once, for real, with `trainers.distill` on the
   tiny world (`--micro`: micro teachers, a smoke run), and cached (keyed by world and full recipe)
   so a re-run trains nothing. A trial is deterministic in its recipe (the seed is part of it), so a
   sampler's proposal of a grid point is answered with that point's real result. That is what makes
   4 samplers × 20 sampler seeds affordable — one grid of training instead of 80 sweeps — and
   every value any sampler sees is a real trial result. (Seeds matter: on the shipped space the
   curves' seed spread is wide, and 3 seeds read the goal as met where 5, 10 and 20 do not.)
3. **Each sampler** runs an Optuna ask/tell study over the space until it has trained as many
   distinct points as the grid has (the grid's compute) or runs out of new points. A repeated
   proposal is answered as the sweep's `DedupOptunaSearch` answers it — told its twin's values,
   tagged `duplicate_of`, asked again (up to 50 times) — and costs no compute: compute = distinct
   trials trained. A sampler that repeats itself 51 times in a row ends there, as a sweep would
   (`exhausted` in the JSON; its curve stays flat). The grid sampler's order is Optuna's
   GridSampler's (shuffled by its seed).
4. **Hypervolume** (`orchestrator.pareto.hypervolume`) against one reference for every sampler:
   each objective's worst value over the truth table minus 10 % of its range. The anytime curve is
   the hypervolume after c distinct trials over the grid's final hypervolume, c = 1..N.

Prints one JSON line (per sampler: mean ± std over seeds of the HV fraction at 10..100 % of the
grid's compute, the compute fraction that first reaches 95 %, and the goal; per objective, its
spread over the grid beside one evaluation's standard error); progress on stderr; saves the
anytime plot (mean line, min–max band over seeds).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl
from matplotlib.figure import Figure

from benchmarks.dmd_step import add_world_args, open_world
from orchestrator import pareto
from orchestrator.search import trial_recipe
from orchestrator.search.samplers import PortableSampler, SamplerSpec, grid_space, make_sampler
from orchestrator.search.space import define_by_run
from orchestrator.spec import SweepSpec, load_spec
from trainers.distill import distill, parse_assignments
from trainers.recipe import Recipe

SAMPLER_NAMES = ("grid", "random", "tpe", "nsga2")
# Optuna's defaults are sized for hundreds of trials: NSGA-II's population of 50 is twice this
# budget (it would never leave its random first generation) and TPE's 10 startup trials are 40 %
# of it. Both are set to a fifth of a 25-point grid instead, chosen before any result was seen.
SAMPLER_OPTIONS: dict[str, dict[str, Any]] = {"tpe": {"n_startup_trials": 5}, "nsga2": {"population_size": 5}}
CHECKPOINTS = (0.1, 0.2, 0.3, 0.4, 0.6, 1.0)  # fractions of the grid's compute reported
GOAL_HV, GOAL_COMPUTE = 0.95, 0.4
MAX_RETRIES = 50  # DedupOptunaSearch's default: this many repeats in a row and the space is spent
REFERENCE_MARGIN = 0.1

Train = Callable[[Recipe], tuple[dict[str, float], float]]
"""recipe -> (final metrics, wall seconds): one real trial."""


def config_key(config: Mapping[str, Any]) -> str:
    """A config's canonical form, as DedupOptunaSearch keys the points it has seen."""
    return json.dumps(dict(config), sort_keys=True, default=str)


def grid_configs(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every point of the spec's (all-discrete) search, in the grid's nested order."""
    space = grid_space(spec.search)
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


# -- the truth table ------------------------------------------------------------------------------


def distill_trainer(world: Any) -> Train:
    """A real trial: distil the recipe in `world` and time it."""

    def train(recipe: Recipe) -> tuple[dict[str, float], float]:
        start = time.perf_counter()
        result = distill(recipe, world)
        return result.metrics, time.perf_counter() - start

    return train


def _recipe_id(recipe: Recipe) -> str:
    return json.dumps(recipe.model_dump(mode="json"), sort_keys=True)


def _read_cache(path: Path) -> pl.DataFrame:
    if path.exists():
        return pl.read_parquet(path)
    return pl.DataFrame(schema={"world": pl.String, "recipe": pl.String, "key": pl.String,
                                "metrics": pl.String, "wall_s": pl.Float64})


def truth_table(spec: SweepSpec, base: dict[str, Any], train: Train, cache: Path,
                world_label: str) -> pl.DataFrame:
    """One row per grid point (key, params, every metric, wall_s, cached), trained only if not cached.

    The cache is keyed by world and full recipe, so a changed base or world never reuses a result;
    it is rewritten after every trial, so an interrupted run keeps what it trained.
    """
    table = _read_cache(cache)
    known = {(r["world"], r["recipe"]): r for r in table.iter_rows(named=True)}
    configs, rows = grid_configs(spec), []
    for i, config in enumerate(configs, 1):
        recipe = trial_recipe(base, config)
        row = known.get((world_label, _recipe_id(recipe)))
        cached = row is not None
        if row is None:
            metrics, wall = train(recipe)
            row = {"world": world_label, "recipe": _recipe_id(recipe), "key": config_key(config),
                   "metrics": json.dumps(metrics), "wall_s": wall}
            table = pl.concat([table, pl.DataFrame([row], schema=table.schema)])
            cache.parent.mkdir(parents=True, exist_ok=True)
            table.write_parquet(cache)
        metrics = json.loads(row["metrics"])
        scores = "  ".join(f"{o.metric} {metrics[o.metric]:.4f}" for o in spec.objectives)
        label = " ".join(f"{k}={v}" for k, v in config.items())
        print(f"[{i}/{len(configs)}] {label}: {scores} ({row['wall_s']:.1f} s{', cached' if cached else ''})",
              file=sys.stderr)
        wanted = [name for o in spec.objectives for name in (o.metric, f"{o.metric}_se") if name in metrics]
        values = {name: metrics[name] for name in wanted}
        rows.append({"key": config_key(config), **config, **values, "wall_s": row["wall_s"],
                     "cached": cached})
    return pl.DataFrame(rows)


def landscape(table: pl.DataFrame, objectives: Mapping[str, str]) -> dict[str, dict[str, float | None]]:
    """Per objective: its spread over the grid (std) beside one evaluation's standard error (mean).

    A spread no larger than the SE means the recipes differ by about what evaluating one of them
    again on other items would: a landscape with little for an adaptive sampler to learn from.
    """
    out = {}
    for metric in objectives:
        se = table[f"{metric}_se"].mean() if f"{metric}_se" in table.columns else None
        out[metric] = {"spread_std": round(float(table[metric].std()), 4),
                       "eval_se_mean": None if se is None else round(float(se), 4)}
    return out


# -- one sampler's run ----------------------------------------------------------------------------


@dataclass
class SamplerRun:
    """The distinct points a sampler trained, in order, and what its proposals cost."""

    order: list[str]  # config keys of the distinct trials, in training order
    proposals: int  # every ask, repeats included
    exhausted: bool  # MAX_RETRIES + 1 repeats in a row before the budget was spent
    study: optuna.Study


def run_sampler(spec: SweepSpec, name: str, seed: int, truth: Mapping[str, list[float]], budget: int,
                options: Mapping[str, Any] | None = None) -> SamplerRun:
    """An ask/tell study with the sweep's sampler and space; every value told is the truth table's.

    Mirrors DedupOptunaSearch: a proposal of a point already trained is told its twin's values
    and tagged `duplicate_of` (the twin has always finished here: trials run one at a time), then
    the sampler is asked again; only a new point spends compute.
    """
    cfg = SamplerSpec(name=name, seed=seed, options=dict(options or {}))
    sampler = PortableSampler(functools.partial(make_sampler, cfg, spec.search))  # the sweep's own form
    study = optuna.create_study(directions=spec.directions, sampler=sampler)
    sample, seen, order, proposals = define_by_run(spec.search), {}, [], 0
    while len(order) < budget:
        for _ in range(MAX_RETRIES + 1):
            trial = study.ask()
            key = config_key(sample(trial))
            proposals += 1
            if key not in truth:
                raise KeyError(f"{name} proposed {key}, which is not a grid point: is every entry discrete?")
            if key not in seen:
                break
            trial.set_user_attr("duplicate_of", seen[key])
            study.tell(trial, truth[key])
        else:
            return SamplerRun(order, proposals, True, study)
        seen[key] = trial.number
        study.tell(trial, truth[key])
        order.append(key)
    return SamplerRun(order, proposals, False, study)


def anytime_fraction(order: list[str], points: Mapping[str, list[float]], objectives: Mapping[str, str],
                     reference: list[float], full_hv: float, budget: int) -> np.ndarray:
    """HV of the first c distinct trials over the grid's final HV, c = 1..budget (held flat past the end)."""
    frame = pl.DataFrame([points[key] for key in order], schema=list(objectives), orient="row")
    history = pareto.hypervolume_history(frame, objectives, reference) if order else []
    history += [history[-1] if history else 0.0] * (budget - len(history))
    return np.asarray(history[:budget]) / full_hv


# -- summary --------------------------------------------------------------------------------------


def at_compute(curve: np.ndarray, fraction: float) -> float:
    """The curve's value after the last trial within `fraction` of the compute (at least one trial)."""
    c = max(1, math.floor(fraction * len(curve) + 1e-9))
    return float(curve[c - 1])


def compute_to_reach(curve: np.ndarray, level: float) -> float | None:
    """The fraction of the compute after which the curve first reaches `level`; None if it never does."""
    hits = np.flatnonzero(curve >= level - 1e-12)
    return round((int(hits[0]) + 1) / len(curve), 4) if len(hits) else None


def _mean_std(values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 4), "std": round(std, 4)}


def summarise(curves: Mapping[str, list[np.ndarray]]) -> dict[str, Any]:
    """Per sampler: HV fraction at each checkpoint (mean ± std over seeds), compute to 95 %; and the goal."""
    samplers = {}
    for name, runs in curves.items():
        reach = [compute_to_reach(curve, GOAL_HV) for curve in runs]
        samplers[name] = {
            "hv_fraction_at": {f"{round(f * 100)}%": _mean_std([at_compute(c, f) for c in runs])
                               for f in CHECKPOINTS},
            "compute_to_95": {"mean": None if None in reach else round(statistics.fmean(reach), 4),
                              "per_seed": reach},
        }
    key = f"{round(GOAL_COMPUTE * 100)}%"
    best = max(samplers, key=lambda n: samplers[n]["hv_fraction_at"][key]["mean"])
    at_goal = samplers[best]["hv_fraction_at"][key]["mean"]
    goal = {"best_sampler": best, "hv_fraction_at_40%": at_goal,
            "worst_seed_at_40%": round(min(at_compute(c, GOAL_COMPUTE) for c in curves[best]), 4),
            "target": f">= {GOAL_HV} of the grid's hypervolume with <= {GOAL_COMPUTE} of its compute",
            "met": bool(at_goal >= GOAL_HV)}
    return {"samplers": samplers, "goal": goal}


def plot(curves: Mapping[str, list[np.ndarray]], path: Path, title: str) -> None:
    """Anytime HV fraction vs compute fraction: mean line and min–max band per sampler, the goal lines."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    for name, runs in curves.items():
        stack = np.vstack(runs)
        x = np.arange(1, stack.shape[1] + 1) / stack.shape[1]
        # a point per trial (the HV once it is done), joined: the last one, the grid's, is exactly 1
        (line,) = ax.plot(x, stack.mean(axis=0), marker="o", markersize=2.5, linewidth=1.4,
                          label=f"{name} (mean of {len(runs)} seeds)")
        ax.fill_between(x, stack.min(axis=0), stack.max(axis=0), alpha=0.15, color=line.get_color(),
                        linewidth=0)
    ax.axhline(GOAL_HV, color="grey", linestyle="--", linewidth=1, label=f"{GOAL_HV:.0%} of the grid's HV")
    ax.axvline(GOAL_COMPUTE, color="grey", linestyle=":", linewidth=1,
               label=f"{GOAL_COMPUTE:.0%} of its compute")
    ax.set(xlabel="compute (distinct trials / grid points)", ylabel="hypervolume / grid's final hypervolume",
           xlim=(0, 1), title=title)
    ax.legend(loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


# -- the command ----------------------------------------------------------------------------------


def sampler_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """SAMPLER_OPTIONS with `--sampler-option SAMPLER.KEY=VALUE` over it."""
    options = {name: dict(opts) for name, opts in SAMPLER_OPTIONS.items()}
    for dotted, value in parse_assignments(items, "--sampler-option").items():
        name, _, key = dotted.partition(".")
        if name not in SAMPLER_NAMES or not key:
            raise SystemExit(f"error: --sampler-option {dotted}: expected SAMPLER.KEY, SAMPLER one of "
                             f"{', '.join(SAMPLER_NAMES)}")
        options.setdefault(name, {})[key] = value
    return options


def compare(spec: SweepSpec, table: pl.DataFrame, seeds: int, options: Mapping[str, Mapping[str, Any]]
            ) -> tuple[dict[str, list[np.ndarray]], dict[str, Any]]:
    """Every sampler × seed over the truth table: the anytime curves and the run facts for the JSON."""
    objectives = pareto.objectives_of(spec)
    points = {r["key"]: [r[m] for m in objectives] for r in table.iter_rows(named=True)}
    reference = pareto.reference_point(table, objectives, margin=REFERENCE_MARGIN)
    full_hv = pareto.hypervolume(table, objectives, reference)
    facts: dict[str, Any] = {"reference": [round(v, 4) for v in reference], "grid_hv": round(full_hv, 6),
                             "runs": {}}
    curves: dict[str, list[np.ndarray]] = {}
    for name in SAMPLER_NAMES:
        curves[name], runs = [], []
        for seed in range(seeds):
            run = run_sampler(spec, name, seed, points, len(points), options.get(name))
            fraction = anytime_fraction(run.order, points, objectives, reference, full_hv, len(points))
            curves[name].append(fraction)
            runs.append(run)
            print(f"{name} seed {seed}: {len(run.order)} distinct in {run.proposals} proposals, "
                  f"HV@40% {at_compute(curves[name][-1], GOAL_COMPUTE):.3f}", file=sys.stderr)
        facts["runs"][name] = {"proposals": [r.proposals for r in runs],
                               "distinct": [len(r.order) for r in runs],
                               "exhausted": [r.exhausted for r in runs],
                               "options": dict(options.get(name, {}))}
    return curves, facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_efficiency",
                                     description=__doc__.splitlines()[0])
    add_world_args(parser)
    parser.add_argument("--spec", default="benchmarks/search_efficiency.yaml",
                        help="sweep spec of the space (every entry discrete)")
    # 3 seeds (the minimum) flipped the goal's verdict on the shipped space; seeds cost
    # about a second each once the truth table is cached
    parser.add_argument("--sampler-seeds", type=int, default=20, help="seeds per sampler (0..N-1)")
    parser.add_argument("--sampler-option", action="append", default=[], metavar="SAMPLER.KEY=VALUE",
                        help=f"Optuna sampler option over the defaults {SAMPLER_OPTIONS}")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/search_efficiency_cache.parquet"),
                        help="truth-table cache (parquet; keyed by world and recipe)")
    parser.add_argument("--plot", type=Path, default=Path("docs/images/search_efficiency.png"),
                        help="output PNG")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base recipe field")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: two torch processes of 2 threads thrash 2 cores)")
    args = parser.parse_args(argv)
    if args.sampler_seeds < 1:
        parser.error("--sampler-seeds must be >= 1")
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    start = time.perf_counter()
    spec = load_spec(args.spec)
    base = dict(spec.base) | parse_assignments(args.set, "--set")
    options = sampler_options(args.sampler_option)
    world_label = "micro" if args.micro else "tiny"
    world_label += "".join(f" {o}" for o in sorted(args.world_option))
    world = None

    def train(recipe: Recipe) -> tuple[dict[str, float], float]:
        nonlocal world
        world = world or open_world(args)  # only when something is not cached
        return distill_trainer(world)(recipe)

    table = truth_table(spec, base, train, args.cache, world_label)
    curves, facts = compare(spec, table, args.sampler_seeds, options)
    space = grid_space(spec.search)
    plot(curves, args.plot, f"{' × '.join(space)}: {len(table)}-point grid\n"
         "band: min–max over sampler seeds")
    trained = table.filter(~pl.col("cached"))
    out = {
        "spec": args.spec, "micro": args.micro, "space": space, "objectives": pareto.objectives_of(spec),
        "grid_points": len(table), "sampler_seeds": args.sampler_seeds,
        "truth_table": {"trial_s_total": round(float(table["wall_s"].sum()), 1),
                        "trained_now": len(trained), "cached": len(table) - len(trained),
                        "landscape": landscape(table, pareto.objectives_of(spec))},
        "reference_rule": f"each objective's worst minus {REFERENCE_MARGIN:.0%} of its span over the truth table",
        **facts, **summarise(curves), "plot": str(args.plot), "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
