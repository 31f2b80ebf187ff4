"""orchestrator.validate: the base and the search against the Recipe and the world, every problem at once.

(The same checks through the CLI, with file:line, are in tests/test_spec.py.)
Run: .venv/bin/python -m pytest tests/test_validate.py -q
"""

from __future__ import annotations

from orchestrator.search.entries import SearchEntry
from orchestrator.validate import MAX_JOINT_POINTS, check_base_and_search, point_problems, search_problems
from trainers.world import world_info

TINY = world_info("tiny")


def _check(base, search, world=TINY) -> tuple[dict | None, list[tuple[str, str]]]:
    resolved, problems = check_base_and_search(base, search, world)
    return resolved, [(p.where, p.message) for p in problems]


def _entries(**entries: dict) -> dict[str, SearchEntry]:
    return {key.replace("__", "."): SearchEntry.model_validate(value) for key, value in entries.items()}


def test_a_sound_base_and_search_resolve_the_simplex_mix():
    base, problems = _check({"steps": 60, "nfe": 4}, {"category_mix": {"simplex": ["portrait", "text"]},
                                                      "teacher_switch_step": {"int": [0, 4]}})
    assert problems == []
    assert base == {"steps": 60, "nfe": 4, "category_mix": {"portrait": 1.0, "text": 1.0}}


def test_search_keys_name_recipe_fields_with_a_kind_that_suits_them():
    search = _entries(
        t2i_edit_ration={"float": [0.1, 0.9]},
        steps={"float": [10, 20]},
        category_mix={"choice": ["landscape"]},
        t2i_edit_ratio={"simplex": ["a", "b"]},
        category_mix__text__x={"float": [0, 1]},
    )
    assert [(p.where, p.message) for p in search_problems(search, set())] == [
        ("search.t2i_edit_ration", "unknown search key 't2i_edit_ration'; did you mean 't2i_edit_ratio'?"),
        ("search.steps.float", "expected one of choice, grid, int for steps, found float"),
        ("search.category_mix", "expected a simplex (or dotted category_mix.<name> keys), found choice"),
        ("search.t2i_edit_ratio.simplex", "expected a simplex only on category_mix, found it on 't2i_edit_ratio'"),
        ("search.category_mix.text.x", "unknown search key 'category_mix.text.x'; did you mean 'category_mix'?"),
    ]


def test_names_must_be_the_world_s():
    _, problems = _check(
        {"nfe": 2, "category_mix": {"underwater": 1.0}, "specialist": "txt", "teacher_weights": {"base": [1, 1], "txt": [0, 0]}},
        {"category_mix.potrait": {"float": [0.0, 2.0]}, "specialist": {"choice": ["text", "portrait"]}},
    )
    assert problems[:5] == [
        ("base.category_mix.underwater", "expected a category of world 'tiny' (landscape, portrait, text), found 'underwater'"),
        ("base.specialist", "expected a specialist of world 'tiny' (text), found 'txt'; did you mean 'text'?"),
        ("base.teacher_weights.txt", "expected a teacher of world 'tiny' (base, text), found 'txt'; did you mean 'text'?"),
        ("search.category_mix.potrait",
         "expected a category of world 'tiny' (landscape, portrait, text), found 'potrait'; did you mean 'portrait'?"),
        ("search.specialist.choice", "expected a specialist of world 'tiny' (text), found 'portrait'"),
    ]


def test_without_a_world_names_are_not_checked():
    _, problems = _check({"category_mix": {"underwater": 1.0}}, {"nfe": {"int": [2, 4]}}, world=None)
    assert problems == []


def test_every_extreme_point_must_be_a_valid_recipe():
    _, problems = _check({"nfe": 4}, {"teacher_switch_step": {"int": [0, 6]}})
    assert problems == [("search.teacher_switch_step.int",
                         "upper bound 6 gives an invalid recipe: teacher_switch_step: expected <= nfe (4), found 6")]
    _, problems = _check({"nfe": 4}, {"teacher_switch_step": {"choice": [1, 5]}})
    assert problems[0][1].startswith("choice 5 gives an invalid recipe")


def test_entries_alone_pass_but_their_combination_does_not():
    _, problems = _check({}, {"nfe": {"int": [2, 4]}, "teacher_switch_step": {"int": [0, 3]}})
    [(where, message)] = problems
    assert where == "search.teacher_switch_step"
    assert message.startswith("the combination {'nfe': 2, 'teacher_switch_step': 3} gives an invalid recipe")


def test_a_conditional_entry_is_checked_with_its_condition_met():
    search = _entries(nfe={"choice": [2, 4]}, teacher_switch_step={"int": [0, 4], "when": {"nfe": 4}})
    assert point_problems({}, search, joint=True) == []  # switch 4 only ever runs with nfe 4
    search = _entries(nfe={"choice": [2, 4]}, teacher_switch_step={"int": [0, 4], "when": {"nfe": 2}})
    [problem] = point_problems({}, search, joint=True)
    assert problem.message.startswith("upper bound 4 gives an invalid recipe")


def test_too_many_combinations_are_checked_entry_by_entry_only():
    clash = {"nfe": {"int": [2, 4]}, "teacher_switch_step": {"int": [0, 3]}}  # nfe 2 with switch 3: invalid
    many = {"seed": {"choice": list(range(32))}, "warmup_steps": {"choice": list(range(33))}}
    assert 2 * 2 * 32 * 33 > MAX_JOINT_POINTS
    assert point_problems({}, _entries(**clash), joint=True) != []
    assert point_problems({}, _entries(**clash, **many), joint=True) == []
    assert point_problems({}, _entries(**clash), joint=False) == []


def test_a_broken_base_or_search_reports_its_own_problems_and_stops_there():
    base, problems = _check({"stepz": 60}, {"nfe": {"int": [4, 2]}, "teacher_switch_step": {"int": [0, 9]}})
    assert base is None
    assert problems == [("base.stepz", "unknown key 'stepz'; did you mean 'steps'?")]  # entry shapes: the spec's
    base, problems = _check(
        {"category_mix": {"landscape": 1.0}}, {"category_mix": {"simplex": ["portrait", "text"]}}
    )
    assert base is None and problems == [
        ("base.category_mix", "expected the names of the simplex at search.category_mix (portrait, text) since "
                              "it sets the whole mix, found landscape")
    ]
