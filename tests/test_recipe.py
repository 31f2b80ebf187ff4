"""Recipe: defaults, field validation (each error names its field), dotted params, flat dicts.

Run: .venv/bin/python -m pytest tests/test_recipe.py -q
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainers.recipe import RECIPE_FIELDS, Recipe


def test_defaults_are_valid():
    recipe = Recipe()
    assert recipe.switch_step == recipe.nfe == 4  # None means: base teacher only
    assert recipe.category_weights == pytest.approx({"landscape": 1 / 3, "portrait": 1 / 3, "text": 1 / 3})
    assert RECIPE_FIELDS == set(Recipe.model_fields)
    assert {"category_mix", "teacher_switch_step", "t2i_edit_ratio"} <= RECIPE_FIELDS


@pytest.mark.parametrize(
    "values, field",
    [
        ({"category_mix": {}}, "category_mix"),
        ({"category_mix": {"text": -1.0}}, "category_mix"),
        ({"category_mix": {"text": 0.0, "portrait": 0.0}}, "category_mix"),
        ({"category_mix": {" ": 1.0}}, "category_mix"),
        ({"teacher_switch_step": 5}, "teacher_switch_step"),  # > nfe 4
        ({"teacher_switch_step": -1}, "teacher_switch_step"),
        ({"specialist": ""}, "specialist"),
        ({"specialist_weight": 1.5}, "specialist_weight"),
        ({"teacher_weights": {"base": [1, 1, 1]}}, "teacher_weights"),  # 3 steps, nfe 4
        ({"teacher_weights": {"base": [0.5] * 4, "text": [0.4] * 4}}, "teacher_weights"),  # sums to 0.9
        ({"teacher_weights": {"base": [2.0, -1.0, 1.0, 1.0]}}, "teacher_weights"),
        ({"t2i_edit_ratio": 1.1}, "t2i_edit_ratio"),
        ({"nfe": 0}, "nfe"),
        ({"nfe": 9}, "nfe"),
        ({"timestep_shift": 0.0}, "timestep_shift"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),  # strict: never truncated to 2
        ({"steps": "60"}, "steps"),  # strict: never parsed from a string
        ({"batch_size": 0}, "batch_size"),
        ({"grad_accum": 0}, "grad_accum"),
        ({"lr_generator": 0.0}, "lr_generator"),
        ({"lr_fake": float("nan")}, "lr_fake"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"max_grad_norm": float("inf")}, "max_grad_norm"),
        ({"critic_updates": 0}, "critic_updates"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"seed": -1}, "seed"),
        ({"report_every": 0}, "report_every"),
        ({"eval_items": 4}, "eval_items"),
        ({"eval_items": 64}, "eval_items_quick"),  # default quick eval (256) > 64
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"mixed_precision": False}, "mixed_precision"),
        ({"nfe": True}, "nfe"),
        ({"stepz": 10}, "stepz"),
    ],
)
def test_invalid_field_is_named(values, field):
    with pytest.raises(ValidationError) as info:
        Recipe(**values)
    assert [err["loc"][0] for err in info.value.errors()] == [field]


def test_valid_schedules_and_switch():
    recipe = Recipe(nfe=2, teacher_weights={"base": [1.0, 0.3], "text": [0.0, 0.7]})
    assert recipe.teacher_weights == {"base": [1.0, 0.3], "text": [0.0, 0.7]}
    assert Recipe(nfe=2, teacher_switch_step=1).switch_step == 1
    assert Recipe(teacher_switch_step=0).switch_step == 0
    assert Recipe(category_mix={"text": 3, "portrait": 1}).category_weights == {
        "text": 0.75,
        "portrait": 0.25,
    }


def test_teacher_weights_and_switch_step_are_exclusive():
    """A schedule replaces the switch: both given would log a switch step that never acted."""
    weights = {"base": [1.0, 0.3], "text": [0.0, 0.7]}
    with pytest.raises(ValidationError) as info:
        Recipe(nfe=2, teacher_switch_step=1, teacher_weights=weights)
    assert [err["loc"] for err in info.value.errors()] == [("teacher_weights",)]
    assert "expected either teacher_weights or teacher_switch_step, found both" in str(info.value)
    with pytest.raises(ValidationError, match="found both"):
        Recipe.from_params({"nfe": 2, "teacher_weights": weights}, {"teacher_switch_step": 0})
    assert Recipe(nfe=2, teacher_switch_step=None, teacher_weights=weights).switch_step == 2


def test_frozen():
    with pytest.raises(ValidationError):
        Recipe().steps = 3  # type: ignore[misc]


def test_from_params_dotted_and_plain_keys():
    base = {"steps": 60, "category_mix": {"landscape": 1.0, "portrait": 1.0, "text": 1.0}}
    recipe = Recipe.from_params(base, {"category_mix.text": 4.0, "t2i_edit_ratio": 0.7, "nfe": 2})
    assert recipe.category_mix == {"landscape": 1.0, "portrait": 1.0, "text": 4.0}
    assert (recipe.t2i_edit_ratio, recipe.nfe, recipe.steps) == (0.7, 2, 60)
    assert base["category_mix"]["text"] == 1.0  # the base is not mutated
    # A dotted key on a field absent from the base extends the field's default.
    assert Recipe.from_params({}, {"category_mix.edit_heavy": 2.0}).category_mix["edit_heavy"] == 2.0
    # A plain key replaces the whole mapping.
    assert Recipe.from_params(base, {"category_mix": {"text": 1.0}}).category_mix == {"text": 1.0}


def test_from_params_rejects_bad_keys_and_values():
    with pytest.raises(ValueError, match="dotted key"):
        Recipe.from_params({}, {"steps.x": 1})
    with pytest.raises(ValidationError, match="teacher_switch_step"):
        Recipe.from_params({"nfe": 2}, {"teacher_switch_step": 3})


def test_flat_dict_uses_dotted_keys():
    flat = Recipe(category_mix={"text": 1.0, "portrait": 2.0}).to_flat_dict()
    assert flat["category_mix.text"] == 1.0 and flat["category_mix.portrait"] == 2.0
    assert "category_mix" not in flat
    assert flat["steps"] == 300 and flat["teacher_switch_step"] is None
    assert set(flat) == (RECIPE_FIELDS - {"category_mix"}) | {"category_mix.text", "category_mix.portrait"}


def test_yaml_round_trip(tmp_path):
    recipe = Recipe(
        nfe=2,
        teacher_weights={"base": [1.0, 0.5], "text": [0.0, 0.5]},
        lr_generator=3e-7,
        mixed_precision="no",
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    assert Recipe.from_yaml(path) == recipe


def test_hand_written_yaml(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("lr_generator: 1e-4\nmixed_precision: no\ncategory_mix: {text: 1}\n")
    recipe = Recipe.from_yaml(path)
    assert (recipe.lr_generator, recipe.mixed_precision, recipe.category_mix) == (1e-4, "no", {"text": 1.0})
