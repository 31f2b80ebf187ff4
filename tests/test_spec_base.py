"""orchestrator.spec_base: strict spec models, and pydantic's errors worded as `expected ..., found ...`.

Run: .venv/bin/python -m pytest tests/test_spec_base.py -q
"""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError, field_validator

from orchestrator.spec_base import SpecModel, model_at, pydantic_problems, verbatim_error


class Inner(SpecModel):
    steps: int = Field(1, ge=1)
    ratio: float = 0.5
    names: list[str] = Field(default_factory=list, min_length=1)

    @field_validator("ratio")
    @classmethod
    def _check_ratio(cls, ratio: float) -> float:
        if ratio > 1:
            raise verbatim_error(f"expected a ratio <= 1 {{not a template}}, found {ratio}")
        return ratio


class Outer(SpecModel):
    name: str = Field(pattern=r"^[a-z]+$")
    inner: Inner | None = None
    many: dict[str, Inner] = Field(default_factory=dict)


def _messages(data) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        Outer.model_validate(data)
    return [(p.where, p.message) for p in pydantic_problems(info.value, Outer)]


def test_messages_say_expected_and_found():
    assert _messages({"name": "../x", "inner": {"steps": "3", "ratio": 2.0, "names": []}}) == [
        ("name", "expected letters, digits, '_', '.' or '-' (starting with a letter or digit), found '../x'"),
        ("inner.steps", "expected a valid integer, found '3'"),  # strict: no coercion
        ("inner.ratio", "expected a ratio <= 1 {not a template}, found 2.0"),  # verbatim, braces safe
        ("inner.names", "expected at least 1 item(s), found []"),
    ]
    assert _messages({"inner": 4}) == [("name", "missing required key"), ("inner", "expected a mapping, found 4")]
    assert _messages({"name": "x", "inner": {"ratio": float("nan")}}) == [
        ("inner.ratio", "expected a finite number, found nan")
    ]


def test_unknown_keys_get_a_hint_from_their_own_mapping():
    assert _messages({"name": "x", "inner": {"step": 2}, "many": {"a": {"nams": ["b"]}}, "innr": {}}) == [
        ("inner.step", "unknown key 'step'; did you mean 'steps'?"),
        ("many.a.nams", "unknown key 'nams'; did you mean 'names'?"),
        ("innr", "unknown key 'innr'; did you mean 'inner'?"),
    ]


def test_a_prefix_places_problems_inside_a_larger_spec():
    with pytest.raises(ValidationError) as info:
        Inner.model_validate({"steps": 0})
    [problem] = pydantic_problems(info.value, Inner, ("base",))
    assert (problem.where, problem.message) == ("base.steps", "expected greater than or equal to 1, found 0")


def test_model_at_walks_fields_lists_and_dicts():
    assert model_at(Outer, ("inner",)) is Inner  # through Optional
    assert model_at(Outer, ("many", "a")) is Inner
    assert model_at(Outer, ("name",)) is None and model_at(Outer, ("absent",)) is None


def test_spec_keys_are_the_written_keys():
    class Aliased(SpecModel):
        float_: float = Field(0.0, alias="float")

    assert Aliased.spec_keys() == ["float"] and Inner.spec_keys() == ["steps", "ratio", "names"]


def test_spec_models_are_frozen():
    inner = Inner(steps=2)
    with pytest.raises(ValidationError, match="frozen"):
        inner.steps = 3
