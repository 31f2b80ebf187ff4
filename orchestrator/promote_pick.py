"""Which trial `python -m orchestrator.promote` promotes: the sweep read back, the pick rules, the seed check.

    sweep = open_sweep(Path("runs/task_ratio"))       # spec, sweep id and trials of a finished sweep
    ranked = candidates(sweep, "knee")                 # finished trials, the pick first
    recipe = sweep.recipe(ranked[0])                   # spec.base ⊕ the trial's params, as the trial ran
    check = seed_check(stats, metric="score", mode="max")

Pure functions over the run folder and polars frames: no MLflow, no training (promote.py does both).
Everything a user can get wrong (no such folder, another spec, an unknown trial) raises PromoteError
with a one-line message before anything is written.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from orchestrator import pareto, results
from orchestrator.spec import SweepSpec, better, load_spec, spec_hash
from trainers.recipe import Recipe

SPEC_FILE = "spec.yaml"  # the resolved spec, when the sweep keeps one in its run folder
SHOWN = ("score", "t2i_score", "edit_score", "diversity")  # the scores every promotion table shows


class PromoteError(Exception):
    """A promotion that cannot start as asked; its message is one line for the user."""


@dataclass
class Sweep:
    """A finished sweep as promote needs it: where, which spec, which trials."""

    run_dir: Path
    spec: SweepSpec
    sweep_id: str
    trials: pl.DataFrame

    @property
    def param_columns(self) -> list[str]:
        """The swept params in trials.parquet (`category_mix.text` for a simplex over category_mix)."""
        return [
            c for c in self.trials.columns if c in self.spec.search or c.partition(".")[0] in self.spec.search
        ]

    def recipe(self, row: dict[str, Any]) -> Recipe:
        """The trial's recipe: spec.base ⊕ its params, as orchestrator.trial builds it.

        A null param is a conditional one the trial did not sample: its base value stood.
        """
        return self.spec.recipe({k: row[k] for k in self.param_columns if row.get(k) is not None})

    def finished(self) -> pl.DataFrame:
        """The trials that ran all their steps and have a value (not null, not NaN) for every objective."""
        done = self.trials.filter(pl.col("status") == "FINISHED")
        metrics = [m for m in pareto.objectives_of(self.spec) if m in done.columns]
        return done.drop_nulls(metrics).filter(*[pl.col(m).cast(pl.Float64).is_not_nan() for m in metrics])


def open_sweep(run_dir: Path, spec_path: Path | None = None) -> Sweep:
    """Read runs/<name>: sweep.json, the spec (`spec_path`, else the run folder's spec.yaml), trials.parquet.

    The spec must be the one the sweep ran with: its resolved hash is checked against sweep.json's.
    Raises PromoteError (and SpecError for a spec with problems).
    """
    if not run_dir.is_dir():
        raise PromoteError(f"{run_dir}: no such run folder")
    marker = run_dir / "sweep.json"
    if not marker.is_file():
        raise PromoteError(f"{run_dir}: not a sweep run folder (no sweep.json)")
    stored = json.loads(marker.read_text())
    spec_path = spec_path or run_dir / SPEC_FILE
    if not spec_path.is_file():
        raise PromoteError(
            f"{run_dir}: no {SPEC_FILE} in the run folder; pass the sweep's spec with --spec PATH"
        )
    spec = load_spec(spec_path)
    if spec_hash(spec) != stored["spec_hash"]:
        raise PromoteError(
            f"{spec_path}: not the spec the sweep in {run_dir} ran with (the resolved spec's hash differs from "
            "sweep.json's); pass the spec it ran with"
        )
    return Sweep(run_dir, spec, stored["sweep_id"], _read_trials(run_dir))


def _read_trials(run_dir: Path) -> pl.DataFrame:
    try:
        return results.load_sweep(run_dir).trials
    except results.MissingResultsError as exc:
        raise PromoteError(str(exc)) from None


# -- the pick rules ----------------------------------------------------------------------------------


def pick_metric(sweep: Sweep, pick: str) -> tuple[str, str]:
    """(metric, mode) that ranks candidates: `score` for knee, the named or first objective for best."""
    objectives = pareto.objectives_of(sweep.spec)
    head, _, arg = pick.partition(":")
    if head == "knee":
        return ("score", "max") if len(objectives) > 1 else next(iter(objectives.items()))
    if head == "best":
        metric = arg or next(iter(objectives))
        return metric, objectives.get(metric) or better(metric)
    return "score", "max"  # trial:<id>: no ranking, score is the headline


def candidates(sweep: Sweep, pick: str) -> list[dict[str, Any]]:
    """Finished trials in the pick rule's order, the pick first (rows of trials.parquet as dicts).

    knee: the Pareto front of the objectives ordered by distance to utopia (its first is the knee), then
    the next front of the remaining trials the same way, and so on (one objective: the same as best).
    best / best:<metric>: by the metric. trial:<id>: that trial alone.
    """
    finished = sweep.finished()
    if finished.is_empty():
        counts = sweep.trials["status"].value_counts().rows() if len(sweep.trials) else []
        found = ", ".join(f"{n} {status}" for status, n in sorted(counts, key=lambda c: (-c[1], c[0])))
        metrics = ", ".join(pareto.objectives_of(sweep.spec))
        raise PromoteError(
            f"{sweep.run_dir}: no finished trials with values for {metrics} to promote ({found or 'no trials'})"
        )
    head, _, arg = pick.partition(":")
    if head == "trial":
        return [_trial_row(sweep, finished, arg)]
    objectives = pareto.objectives_of(sweep.spec)
    if head == "knee" and len(objectives) > 1:
        return _by_fronts(finished, objectives)
    metric, mode = pick_metric(sweep, pick)
    if metric not in finished.columns:
        metrics = ", ".join(c for c in finished.columns if _is_metric(sweep, c))
        raise PromoteError(f"--pick {pick}: no metric {metric!r} in trials.parquet; metrics: {metrics}")
    ranked = finished.drop_nulls([metric]).filter(pl.col(metric).cast(pl.Float64).is_not_nan())
    ranked = ranked.sort(metric, descending=mode == "max", maintain_order=True)
    if ranked.is_empty():
        raise PromoteError(f"--pick {pick}: no finished trial has a value for {metric}")
    return ranked.to_dicts()


def _is_metric(sweep: Sweep, column: str) -> bool:
    bookkeeping = {
        "trial_id",
        "status",
        "started_at",
        "error",
        "reports",
        "wall_s",
        "mlflow_run_id",
        "step",
        "final",
    }
    return column not in bookkeeping and column not in sweep.param_columns


def _trial_row(sweep: Sweep, finished: pl.DataFrame, trial_id: str) -> dict[str, Any]:
    valid = ", ".join(finished["trial_id"].to_list())
    match = sweep.trials.filter(pl.col("trial_id") == trial_id)
    if match.is_empty():
        raise PromoteError(
            f"--pick trial:{trial_id}: no such trial in {sweep.run_dir}; finished trials: {valid}"
        )
    row = match.row(0, named=True)
    if row["status"] != "FINISHED":
        problem = f"the trial is {row['status']}, not FINISHED"
    elif finished.filter(pl.col("trial_id") == trial_id).is_empty():
        problem = f"the trial has no value for {', '.join(pareto.objectives_of(sweep.spec))}"
    else:
        return row
    raise PromoteError(f"--pick trial:{trial_id}: {problem}; finished trials: {valid}")


def _by_fronts(finished: pl.DataFrame, objectives: dict[str, str]) -> list[dict[str, Any]]:
    """Non-dominated sorting: front by front, each ordered by distance to utopia (the knee's rule)."""
    ordered: list[dict[str, Any]] = []
    rest = finished
    while not rest.is_empty():
        front = pareto.pareto_front(rest, objectives)
        distance = np.linalg.norm(1.0 - pareto.normalised(front, objectives), axis=1)
        rows = [front.row(int(i), named=True) for i in np.argsort(distance, kind="stable")]
        if not ordered:  # the first is the knee by construction; keep knee() the one definition of it
            assert rows[0]["trial_id"] == pareto.knee(front, objectives)["trial_id"]
        ordered += rows
        rest = rest.filter(~pl.col("trial_id").is_in(front["trial_id"].implode()))
    return ordered


# -- the seed check -------------------------------------------------------------------------------


@dataclass
class SeedStats:
    """One candidate re-run with several training seeds: its metrics per seed, with mean and std."""

    trial_id: str
    runs: list[dict[str, float]] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        return statistics.fmean(r[metric] for r in self.runs)

    def std(self, metric: str) -> float:
        """Sample standard deviation over the seeds (0 with one seed)."""
        values = [r[metric] for r in self.runs]
        return statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class SeedCheck:
    """The verdict: the leader on the pick metric, and whether its lead beats the seed noise."""

    ranked: list[SeedStats]  # best mean first
    metric: str
    lead: float  # leader's mean minus the runner-up's, in the better direction (>= 0)
    noise: float  # the larger seed std of the two
    decisive: bool

    @property
    def leader(self) -> SeedStats:
        return self.ranked[0]

    @property
    def runner_up(self) -> SeedStats | None:
        return self.ranked[1] if len(self.ranked) > 1 else None

    def summary(self, metrics: Sequence[str]) -> dict[str, Any]:
        """For the model card: the verdict and each candidate's [mean, std] per metric."""
        return {
            "metric": self.metric,
            "lead": self.lead,
            "noise": self.noise,
            "decisive": self.decisive,
            "seeds": len(self.leader.runs),
            "candidates": {s.trial_id: {m: [s.mean(m), s.std(m)] for m in metrics} for s in self.ranked},
        }


def seed_check(stats: Sequence[SeedStats], metric: str, mode: str) -> SeedCheck:
    """Rank candidates by their mean `metric` over seeds; the leader wins only if lead > noise.

    Rule: lead = |mean(leader) - mean(runner-up)| must exceed the larger of their two seed standard
    deviations: a lead within one seed std is what re-training the same recipe produces by luck. Not a
    Welch t-test: at the 2-3 seeds a sweep's budget allows it has 1-4 degrees of freedom, a 5 % critical
    t of 2.8-12.7, and would stop nearly every promotion; more seeds make the stds, and this rule, sharper.
    One candidate has nothing to beat: it is decisive.
    """
    sign = 1.0 if mode == "max" else -1.0
    ranked = sorted(stats, key=lambda s: -sign * s.mean(metric))
    if len(ranked) == 1:
        return SeedCheck(ranked, metric, 0.0, ranked[0].std(metric), True)
    leader, runner_up = ranked[0], ranked[1]
    lead = sign * (leader.mean(metric) - runner_up.mean(metric))
    noise = max(leader.std(metric), runner_up.std(metric))
    return SeedCheck(ranked, metric, lead, noise, lead > noise)


def run_seeds(
    recipes: dict[str, Recipe], seeds: int, distil: Callable[[str, Recipe], dict[str, float]]
) -> list[SeedStats]:
    """Each candidate's recipe trained with seeds recipe.seed, recipe.seed + 1, ...; `distil` returns metrics."""
    out = []
    for trial_id, recipe in recipes.items():
        stats = SeedStats(trial_id)
        for k in range(seeds):
            seeded = Recipe.from_params(recipe.model_dump(), {"seed": recipe.seed + k})
            stats.runs.append(distil(trial_id, seeded))
        out.append(stats)
    return out
