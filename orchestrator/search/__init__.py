"""The search section, sampled: from the spec's entries to the Recipe a trial runs.

    recipe = trial_recipe(spec.base, config)    # the one way a trial's Recipe is built

Modules: `entries` (one class per search kind: validation, Optuna suggest, domain, extreme
points), `conditions` (`when:`), `space` (the define-by-run function over the entries),
`samplers` (the registry of Optuna samplers, the `sampler:` section and its checks, the
pickle-safe wrapper) and `dedup` (the Tune searcher that never runs a point twice).

A sampled config is a flat dict keyed like the Recipe (`t2i_edit_ratio`, `category_mix.text`),
plus the raw uniform draws behind a simplex (`category_mix.raw.text`): Optuna's params, kept so the
sampler can learn from them, dropped from the recipe. A confirmation run's config also names the
search trial it re-runs (`confirm_of`, orchestrator.confirm), which is not a recipe field either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainers.recipe import Recipe


def raw_key(field: str, name: str) -> str:
    """Optuna param name of a simplex component's uniform draw."""
    return f"{field}.raw.{name}"


CONFIRM_KEY = "confirm_of"
"""In a confirmation run's config: the id of the search trial it re-runs with a new seed."""


def is_raw_key(key: str) -> bool:
    return ".raw." in key


def recipe_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled params without the raw simplex draws (nor `confirm_of`): the Recipe fields (`category_mix.text`, ...)."""
    return {key: value for key, value in config.items() if not is_raw_key(key) and key != CONFIRM_KEY}


def trial_recipe(base: dict[str, Any], config: Mapping[str, Any]) -> Recipe:
    """The Recipe a trial runs: the spec's base with Tune's sampled config over it (raw draws dropped)."""
    return Recipe.from_params(base, recipe_params(config))
