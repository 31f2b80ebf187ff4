"""The confirmation stage: the search's best trials re-run with new training seeds, and what they show.

    runs = plan(trials, configs, spec)        # [ConfirmRun]: the runs to make, fixed when the search ends
    stats = confirmed(confirm_runs, metrics)  # one row per confirmed recipe: mean ± SE over its seeds
    verdict = judge(stats, "score", "max")    # the leader, who is indistinguishable from it, a winner or not

A search ranks single-seed point estimates; on the tiny world the spread of one recipe over training
seeds is as large as a whole sweep's spread of scores. So the sweep re-runs its top K trials
(`confirm: {top, seeds}`) full-length with S new seeds (the recipe's seed + 1 ... + S) and judges on
those runs alone: the search run is left out of the mean because it was picked for scoring high (its
value is biased up; the table shows it beside the confirmed mean).

The rules (docs/sweeps.md, "Confirmation"):
- SE of a recipe's mean = pooled seed std / √n. The seed std is pooled over the confirmed recipes
  (Σ (n_i − 1) s_i² / Σ (n_i − 1)): training noise is the machinery's, not the recipe's, and a std
  from two seeds alone swings by a factor of several.
- A recipe is *indistinguishable* from the leader when their difference is within Z = 2 SE of the
  difference (SE_diff = √(SE_a² + SE_b²)); the leader is a *winner* only when every other confirmed
  recipe is behind it by more than that. Otherwise the verdict says so in words.

Pure functions over polars frames: the sweep engine runs the plan on Ray Tune, promote reads the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from orchestrator import ranking
from orchestrator.search import CONFIRM_KEY, recipe_params, trial_recipe

Z = 2.0  # differences within Z SE of the difference are not called


@dataclass(frozen=True)
class ConfirmRun:
    """One run of the stage: a search trial's sampled config with a new training seed."""

    confirm_of: str
    seed: int
    config: dict[str, Any]  # the Tune config: the trial's params, `seed`, and CONFIRM_KEY


def candidates(trials: pl.DataFrame, objectives: Mapping[str, str], top: int) -> list[str]:
    """Ids of the `top` best finished trials: by the objective, or front by front nearest the knee."""
    finished = trials.filter(pl.col("status") == "FINISHED") if "status" in trials.columns else trials
    return [row["trial_id"] for row in ranking.ranked(finished, objectives)[:top]]


def plan(trials: pl.DataFrame, configs: Mapping[str, dict[str, Any]], spec: Any) -> list[ConfirmRun]:
    """The stage's runs: each candidate's exact sampled config (`configs`: trial id -> Tune config)
    with seeds recipe.seed + 1 ... + S, candidates in rank order."""
    objectives = {o.metric: o.mode for o in spec.objectives}
    runs = []
    for trial_id in candidates(trials, objectives, spec.confirm.top):
        params = recipe_params(configs[trial_id])
        seed0 = trial_recipe(spec.base, params).seed
        for k in range(1, spec.confirm.seeds + 1):
            config = {**params, "seed": seed0 + k, CONFIRM_KEY: trial_id}
            runs.append(ConfirmRun(trial_id, seed0 + k, config))
    return runs


def confirmed(runs: pl.DataFrame, metrics: Sequence[str], search: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per confirmed recipe (its search trial id as `trial_id`), best-first order not implied.

    Columns: trial_id, seeds (finished runs), and per metric: `<m>` (mean over the runs), `<m>_std`
    (the recipe's own sample std), `<m>_se` (pooled std / √seeds, see the module docstring) and
    `search_<m>` (the search trial's value, when `search` has it). Runs that did not finish are not counted.
    """
    done = runs.filter(pl.col("status") == "FINISHED") if "status" in runs.columns else runs
    metrics = [m for m in metrics if m in done.columns]
    if done.is_empty() or not metrics:
        return pl.DataFrame()
    grouped = done.group_by(CONFIRM_KEY, maintain_order=True).agg(
        pl.len().alias("seeds"),
        *[pl.col(m).cast(pl.Float64).mean().alias(m) for m in metrics],
        *[pl.col(m).cast(pl.Float64).var(ddof=1).alias(f"{m}_var") for m in metrics],
    ).rename({CONFIRM_KEY: "trial_id"})
    dof = (grouped["seeds"] - 1).clip(lower_bound=0)
    columns = []
    for m in metrics:
        variances = grouped[f"{m}_var"].fill_null(0.0)
        pooled = math.sqrt((dof * variances).sum() / dof.sum()) if dof.sum() > 0 else float("nan")
        columns += [variances.sqrt().alias(f"{m}_std"), (pooled / grouped["seeds"].cast(pl.Float64).sqrt()).alias(f"{m}_se")]
    out = grouped.with_columns(columns).drop([f"{m}_var" for m in metrics])
    if search is not None and not search.is_empty():
        found = [m for m in metrics if m in search.columns]
        out = out.join(search.select("trial_id", *[pl.col(m).alias(f"search_{m}") for m in found]), on="trial_id", how="left")
    return out


@dataclass(frozen=True)
class Standing:
    trial_id: str
    mean: float
    se: float
    gap: float  # leader's mean minus this one's, in the better direction (0 for the leader)
    gap_se: float  # SE of that difference
    verdict: str  # "leader" | "indistinguishable" | "behind" | "unknown" (no SE)


@dataclass(frozen=True)
class Verdict:
    metric: str
    mode: str
    standings: list[Standing]  # best mean first

    @property
    def leader(self) -> Standing | None:
        return self.standings[0] if self.standings else None

    @property
    def ties(self) -> list[Standing]:
        return [s for s in self.standings[1:] if s.verdict in ("indistinguishable", "unknown")]

    @property
    def winner(self) -> str | None:
        """The leader's trial id when it is ahead of every other confirmed recipe beyond noise; else None."""
        if self.leader is None or len(self.standings) < 2 or self.ties:
            return None
        return self.leader.trial_id

    def text(self) -> str:
        """The verdict in words."""
        if self.leader is None:
            return "no confirmation run finished: nothing to judge"
        lead = self.leader
        shown = f"{self.metric} {lead.mean:.3f} ± {lead.se:.3f}"
        if len(self.standings) == 1:
            return f"only trial {lead.trial_id} was confirmed ({shown}): nothing to compare it with"
        if self.winner:
            closest = self.standings[1]
            return (f"winner: trial {lead.trial_id} ({shown}), ahead of every other confirmed recipe by more than "
                    f"{Z:g} SE of the difference (closest: {closest.trial_id}, {closest.gap:+.3f} ± {closest.gap_se:.3f})")
        tied = ", ".join(f"{s.trial_id} ({s.gap:+.3f} ± {s.gap_se:.3f})" for s in self.ties)
        return (f"no winner: trial {lead.trial_id} leads ({shown}) but {tied} "
                f"{'is' if len(self.ties) == 1 else 'are'} within {Z:g} SE of the difference; "
                "the data cannot tell them apart (more seeds, or a larger effect, would)")


def judge(stats: pl.DataFrame, metric: str, mode: str) -> Verdict:
    """Rank confirmed recipes by their mean `metric`; mark each against the leader (module docstring)."""
    if stats.is_empty() or metric not in stats.columns:
        return Verdict(metric, mode, [])
    sign = 1.0 if mode == "max" else -1.0
    rows = sorted(stats.iter_rows(named=True), key=lambda r: -sign * r[metric])
    lead = rows[0]
    standings = [Standing(lead["trial_id"], lead[metric], lead[f"{metric}_se"], 0.0, 0.0, "leader")]
    for row in rows[1:]:
        gap = sign * (lead[metric] - row[metric])
        gap_se = math.hypot(lead[f"{metric}_se"], row[f"{metric}_se"])
        if math.isnan(gap_se):
            verdict = "unknown"
        else:
            verdict = "indistinguishable" if gap <= Z * gap_se else "behind"
        standings.append(Standing(row["trial_id"], row[metric], row[f"{metric}_se"], gap, gap_se, verdict))
    return Verdict(metric, mode, standings)


def ranking_metric(spec: Any) -> tuple[str, str]:
    """What the verdict ranks on: the single objective, else the scalar `score` (maximised)."""
    if len(spec.objectives) == 1:
        return spec.objectives[0].metric, spec.objectives[0].mode
    return "score", "max"
