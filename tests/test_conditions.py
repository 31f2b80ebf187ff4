"""orchestrator.search.conditions: `when:` conditions hold, are met, and name earlier discrete keys.

Run: .venv/bin/python -m pytest tests/test_conditions.py -q
"""

from __future__ import annotations

from orchestrator.search.conditions import holds, meeting_params, when_problems
from orchestrator.search.entries import SearchEntry


def _search(**entries: dict) -> dict[str, SearchEntry]:
    return {key: SearchEntry.model_validate(value) for key, value in entries.items()}


def test_a_condition_holds_when_every_param_took_a_wanted_value():
    when = {"teacher_switch_step": [1, 2, 3], "mixed_precision": "bf16"}
    assert holds(when, {"teacher_switch_step": 2, "mixed_precision": "bf16"})
    assert not holds(when, {"teacher_switch_step": 0, "mixed_precision": "bf16"})
    assert not holds(when, {"teacher_switch_step": 2})  # a param not drawn (its own condition failed)
    assert holds(None, {}) and holds({}, {})


def test_meeting_params_take_each_first_wanted_value():
    assert meeting_params({"teacher_switch_step": [2, 3], "mixed_precision": "bf16"}) == {
        "teacher_switch_step": 2, "mixed_precision": "bf16"
    }
    assert meeting_params(None) == {}
    assert holds({"a": [2, 3]}, meeting_params({"a": [2, 3]}))


def test_conditions_name_earlier_discrete_keys_with_values_of_their_domain():
    search = _search(
        teacher_switch_step={"int": [0, 4]},
        t2i_edit_ratio={"float": [0.1, 0.9]},
        a={"float": [0.3, 1.0], "when": {"teacher_switch_step": [1, 7]}},
        b={"float": [0.3, 1.0], "when": {"t2i_edit_ratio": 0.5}},
        c={"float": [0.3, 1.0], "when": {"d": 1, "teacher_switch": 1, "broken": 1}},
        d={"choice": [1, 2]},
    )
    problems = [(p.where, p.message) for key in ("a", "b", "c") for p in when_problems(key, search, {"broken"})]
    assert problems == [
        ("search.a.when.teacher_switch_step", "expected values of teacher_switch_step ([0, 1, 2, 3, 4]), found [1, 7]"),
        ("search.b.when.t2i_edit_ratio", "expected a condition on a choice, grid or int key, found one on 't2i_edit_ratio'"),
        ("search.c.when.d", "expected a search key listed before this one, found 'd', listed after it"),
        ("search.c.when.teacher_switch",
         "expected a search key listed before this one, found unknown 'teacher_switch'; did you mean 'teacher_switch_step'?"),
    ]
    assert when_problems("d", search, set()) == []  # no condition
