"""The base of every spec model, and pydantic's validation errors worded as spec Problems.

    class Budget(SpecModel): ...                      # unknown keys are errors, no coercion, no inf/nan
    raise verbatim_error("expected a step > 0, found -1")   # a validator's message, used as written
    problems = pydantic_problems(exc, SweepSpec)      # one `expected ..., found ...` Problem per error

Pydantic's own messages ("Input should be a valid list") are reworded as `expected ..., found ...`,
and an unknown key gets a did-you-mean over the keys its mapping allows (`SpecModel.spec_keys`).
"""

from __future__ import annotations

from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from orchestrator.yamlio import Loc, Problem, did_you_mean, show


class SpecModel(BaseModel):
    """Base of every spec section: unknown keys are errors, no type coercion, no inf/nan."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    @classmethod
    def spec_keys(cls) -> list[str]:
        """The keys a spec may write in this mapping (for did-you-mean on an unknown one)."""
        return [field.alias or name for name, field in cls.model_fields.items()]


def verbatim_error(msg: str) -> PydanticCustomError:
    """A validation error whose message is used verbatim (no 'Value error, ' prefix, braces safe)."""
    return PydanticCustomError("spec", "{msg}", {"msg": msg})


def pydantic_problems(exc: ValidationError, model: type[BaseModel], prefix: Loc = ()) -> list[Problem]:
    """One Problem per pydantic error, worded `expected ..., found ...`, with did-you-mean on unknown keys."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(part for part in err["loc"] if part != "[key]")
        problems.append(Problem((*prefix, *loc), error_message(err, model, loc)))
    return problems


def error_message(err: dict[str, Any], model: type[BaseModel], loc: Loc) -> str:
    """One pydantic error (a dict of `ValidationError.errors()`) at `loc` under `model`, in spec words."""
    kind, found = err["type"], show(err.get("input"))
    if kind == "extra_forbidden":
        parent = model_at(model, loc[:-1])
        allowed = _allowed_keys(parent)
        return f"unknown key {loc[-1]!r}" + (did_you_mean(str(loc[-1]), allowed) if allowed else "")
    if kind == "missing":
        return "missing required key"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, found {found}"
    if kind == "list_type":
        return f"expected a list, found {found}"
    msg = err["msg"]
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind == "spec":  # our own PydanticCustomError: already says expected/found
        return msg
    if kind == "string_too_short":
        return f"expected a non-empty string, found {found}"
    if kind == "too_short":
        return f"expected at least {err['ctx']['min_length']} item(s), found {found}"
    if kind == "string_pattern_mismatch":
        return f"expected letters, digits, '_', '.' or '-' (starting with a letter or digit), found {found}"
    if msg.startswith("Input should be"):
        return f"{msg.replace('Input should be', 'expected', 1)}, found {found}"
    return f"{msg[:1].lower()}{msg[1:]}, found {found}"


def _allowed_keys(model: type[BaseModel] | None) -> list[str]:
    if model is None:
        return []
    if issubclass(model, SpecModel):
        return model.spec_keys()
    return [field.alias or name for name, field in model.model_fields.items()]


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `loc` under `model` (for allowed keys)."""
    tp: Any = model
    for part in loc:
        tp = _strip_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for name, f in tp.model_fields.items() if (f.alias or name) == part), None)
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (list, dict):
            tp = get_args(tp)[-1]
        else:
            return None
    tp = _strip_optional(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp
