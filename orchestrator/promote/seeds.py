"""The seed check: are the top candidates' differences more than re-training luck?

    stats = run_seeds(recipes, seeds=3, distil=lambda trial_id, recipe: metrics)
    check = seed_check(stats, metric="score", mode="max")    # check.decisive, check.leader, ...

Pure: `distil` is the caller's (orchestrator.promote.cli trains with trainers.distill); the rule is
in seed_check's docstring.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trainers.recipe import Recipe


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
        """For the model card: the verdict and each candidate's [mean, std] per metric (those its world reports)."""
        metrics = [m for m in metrics if all(m in r for s in self.ranked for r in s.runs)]
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
