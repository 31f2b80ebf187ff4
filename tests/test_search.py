"""orchestrator.search: sampled configs to the Recipe a trial runs (`trial_recipe`, the one place).

Run: .venv/bin/python -m pytest tests/test_search.py -q
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.search import is_raw_key, raw_key, recipe_params, trial_recipe
from trainers.recipe import Recipe


def test_raw_simplex_draws_are_named_apart_and_dropped():
    assert raw_key("category_mix", "text") == "category_mix.raw.text" and is_raw_key("category_mix.raw.text")
    assert not is_raw_key("category_mix.text") and not is_raw_key("t2i_edit_ratio")
    params = {"category_mix.raw.text": 0.3, "category_mix.text": 0.5, "steps": 3}
    assert recipe_params(params) == {"category_mix.text": 0.5, "steps": 3}


def test_trial_recipe_is_the_base_with_the_sampled_config_over_it():
    base = {"steps": 60, "nfe": 4, "category_mix": {"landscape": 1.0, "text": 1.0}}
    config = {"t2i_edit_ratio": 0.3, "category_mix.raw.landscape": 0.9, "category_mix.raw.text": 0.1,
              "category_mix.landscape": 0.25, "category_mix.text": 0.75}
    recipe = trial_recipe(base, config)
    assert recipe == Recipe.from_params(base, recipe_params(config))
    assert (recipe.steps, recipe.t2i_edit_ratio, recipe.category_mix) == (60, 0.3, {"landscape": 0.25, "text": 0.75})
    assert trial_recipe(base, {}) == Recipe.model_validate(base)
    assert base == {"steps": 60, "nfe": 4, "category_mix": {"landscape": 1.0, "text": 1.0}}  # not modified


def test_an_invalid_point_is_the_recipe_s_own_error():
    with pytest.raises(ValidationError, match="teacher_switch_step"):
        trial_recipe({"nfe": 2}, {"teacher_switch_step": 3})
