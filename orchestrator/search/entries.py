"""The search kinds, one class each, as Optuna's distributions are: each owns its checks and its sampling.

    entry = SearchEntry.model_validate({"float": [0.1, 0.9], "step": 0.1})   # -> FloatEntry
    entry.suggest(trial, "t2i_edit_ratio")   # {"t2i_edit_ratio": 0.3}: asks an optuna.Trial
    entry.domain()                           # [0.1, 0.2, ..., 0.9]: every value (None when continuous)
    entry.extreme_points("t2i_edit_ratio")   # labelled params the loader checks as recipes

A spec entry is a mapping with exactly one kind's key (`float: [lo, hi]`, `int: [lo, hi]`,
`choice: [...]`, `grid: [...]`, `simplex: [names]`) and the options every entry may write: `log`
and `step` (which only ranges take) and `when` (see `conditions`). Validating a `SearchEntry` gives
the instance of its kind; a mapping with no kind or several gets every problem of its parts, then
the count.

A simplex over a mapping field is sampled uniformly on the simplex with Optuna's recipe: one float
`u_i` per name (kept as the raw param `category_mix.raw.<name>`), `w_i = -log(u_i)`, normalised --
i.e. Dirichlet(1, ..., 1), whatever sampler proposes the u_i independently.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import optuna
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.functional_validators import ModelWrapValidatorHandler

from orchestrator.search import raw_key
from orchestrator.spec_base import SpecModel, error_message, verbatim_error
from orchestrator.yamlio import show

Scalar = str | int | float | bool | None  # what an Optuna categorical can hold

# u_i is drawn in [SIMPLEX_LOW, 1]: -log(u) stays finite (Optuna's recipe uses (0, 1]).
SIMPLEX_LOW = 1e-12


class SearchEntry(SpecModel):
    """One searched key: its kind (the subclass) and the options any entry may write."""

    kind: ClassVar[str] = ""
    takes_log_step: ClassVar[bool] = True  # False for the kinds that are not ranges
    # Python types of the values it gives (None: any; a simplex sets a whole mix, so none alone)
    value_types: ClassVar[frozenset[type] | None] = frozenset()

    log: bool = False
    step: float | None = None
    when: dict[str, Any] | None = Field(None, description="{earlier_param: value or [values]}")

    @classmethod
    def spec_keys(cls) -> list[str]:
        return [*KINDS, "log", "step", "when"]

    @model_validator(mode="wrap")
    @classmethod
    def _as_kind(cls, data: Any, handler: ModelWrapValidatorHandler[SearchEntry]) -> SearchEntry:
        """Validating the base class validates as the one kind the mapping names."""
        if cls is not SearchEntry or not isinstance(data, dict):
            return handler(data)
        given = [kind for kind in KINDS if data.get(kind) is not None]  # an explicit null is no kind
        if len(given) == 1:
            return KINDS[given[0]].model_validate({k: v for k, v in data.items() if k not in KINDS or k in given})
        raise _kind_count_error(data, given, handler)

    @field_validator("log")
    @classmethod
    def _check_log(cls, log: bool, info: ValidationInfo) -> bool:
        bounds = info.data.get("bounds")
        if log and bounds and bounds[0] <= 0:
            raise verbatim_error(f"expected a lower bound > 0 for a log scale, found {show(bounds)}")
        return log

    @field_validator("step")
    @classmethod
    def _check_step(cls, step: float | None, info: ValidationInfo) -> float | None:
        if step is None:
            return None
        if step <= 0:
            raise verbatim_error(f"expected a step > 0, found {step}")
        if info.data.get("log"):
            raise verbatim_error("expected either log or step, found both")
        bounds = info.data.get("bounds")
        if bounds:
            cls._check_step_fits(step, bounds)
        return step

    @classmethod
    def _check_step_fits(cls, step: float, bounds: list[float]) -> None:
        """A range's own requirements on its step (ranges only: other kinds have no bounds)."""

    @field_validator("when")
    @classmethod
    def _check_when(cls, when: dict[str, Any] | None) -> dict[str, Any] | None:
        if when is not None and not when:
            raise verbatim_error("expected {param: value or [values]}, found {}")
        return when

    @model_validator(mode="after")
    def _check_log_step_fit(self) -> SearchEntry:
        if not self.takes_log_step and (self.log or self.step is not None):
            raise verbatim_error(f"expected log/step only with float or int, found them with {self.kind}")
        return self

    # -- behaviour, given by each kind ----------------------------------------------------------

    @classmethod
    def fits(cls, types: set[Any]) -> bool:
        """True when the kind's values suit a Recipe field holding `types`."""
        return cls.value_types is None or bool(cls.value_types & types)

    def domain(self) -> list[Any] | None:
        """Every value the entry can take (for conditions and grids); None when continuous."""
        return None

    def extreme_points(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        """Representative params, labelled: both bounds, every value, every simplex corner."""
        raise NotImplementedError

    def suggest(self, trial: optuna.Trial, key: str) -> dict[str, Any]:
        """The params this entry adds to a config, asked of an Optuna trial."""
        raise NotImplementedError


def _kind_count_error(
    data: dict[str, Any], given: list[str], handler: ModelWrapValidatorHandler[SearchEntry]
) -> ValidationError:
    """No kind or several: the problems of each kind's value and of the options, else the count itself.

    The options are checked against the first range given whose bounds are sound (a log scale's
    lower bound, a step that divides the range), as they would be with that kind alone.
    """
    errors: list[dict[str, Any]] = []
    for kind in given:
        errors += _errors(lambda kind=kind: KINDS[kind].model_validate({kind: data[kind]}))
    options = {k: v for k, v in data.items() if k not in KINDS}
    sound = [k for k in given if issubclass(KINDS[k], RangeEntry) and not any(e["loc"][0] == k for e in errors)]
    if sound:
        errors += _errors(lambda: KINDS[sound[0]].model_validate({sound[0]: data[sound[0]], **options}))
    else:
        errors += _errors(lambda: handler(options))
    lines = [
        {"type": verbatim_error(error_message(err, SearchEntry, err["loc"])), "loc": err["loc"], "input": err["input"]}
        for err in errors
    ]
    if not lines:
        found = ", ".join(given) or "none"
        lines = [{"type": verbatim_error(f"expected exactly one of {', '.join(KINDS)}, found {found}"),
                  "loc": (), "input": data}]
    return ValidationError.from_exception_data(SearchEntry.__name__, lines)  # type: ignore[arg-type]


def _errors(validate: Any) -> list[dict[str, Any]]:
    try:
        validate()
    except ValidationError as exc:
        return exc.errors(include_url=False)
    return []


# -- the kinds ----------------------------------------------------------------------------------
# Each kind's own key is declared in a base listed after the entry's class: pydantic validates
# fields base-first, and the options' checks (a log scale's lower bound, a step that divides the
# range) read the bounds validated before them. Errors also come out in the keys' order.


class _FloatKey(SpecModel):
    bounds: list[float] = Field(alias="float", description="[lower, upper]")


class _IntKey(SpecModel):
    bounds: list[int] = Field(alias="int", description="[lower, upper], both included")


class _ChoiceKey(SpecModel):
    values: list[Any] = Field(alias="choice")


class _GridKey(SpecModel):
    values: list[Any] = Field(alias="grid", description="values enumerated by the grid sampler")


class _SimplexKey(SpecModel):
    names: list[str] = Field(alias="simplex", description="names of a mapping field's components")


class RangeEntry(SearchEntry):
    """`float: [lo, hi]` or `int: [lo, hi]` (`bounds`, from the kind's key), on a log scale or a step grid."""

    @field_validator("bounds", check_fields=False)
    @classmethod
    def _check_bounds(cls, bounds: list[float]) -> list[float]:
        if len(bounds) != 2:
            raise verbatim_error(f"expected [lower, upper], found {show(bounds)}")
        if not bounds[0] < bounds[1]:
            raise verbatim_error(f"expected lower bound < upper bound, found {show(bounds)}")
        return bounds

    @classmethod
    def _check_step_fits(cls, step: float, bounds: list[float]) -> None:
        n = (bounds[1] - bounds[0]) / step
        if abs(n - round(n)) > 1e-9:
            raise verbatim_error(
                f"expected (upper - lower) to be a multiple of the step, found {show(bounds)} step {step}"
            )

    def extreme_points(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        lo, hi = self.bounds
        return [(f"lower bound {lo}", {key: lo}), (f"upper bound {hi}", {key: hi})]


class FloatEntry(RangeEntry, _FloatKey):
    kind = "float"
    value_types = frozenset({float})

    def domain(self) -> list[Any] | None:
        if self.step is None:
            return None
        lo, hi = self.bounds
        return [round(lo + i * self.step, 12) for i in range(round((hi - lo) / self.step) + 1)]

    def suggest(self, trial: optuna.Trial, key: str) -> dict[str, Any]:
        lo, hi = self.bounds
        value = trial.suggest_float(key, lo, hi, log=self.log, step=self.step)
        # Optuna's lo + k·step carries float noise (0.7000000000000001): show the grid value.
        return {key: value if self.step is None else round(value, 12)}


class IntEntry(RangeEntry, _IntKey):
    kind = "int"
    value_types = frozenset({int, float})  # an int also sets a float field

    @classmethod
    def _check_step_fits(cls, step: float, bounds: list[float]) -> None:
        if step != int(step):
            raise verbatim_error(f"expected an integer step for an int range, found {step}")
        super()._check_step_fits(step, bounds)

    def domain(self) -> list[Any] | None:
        if self.log:
            return None
        lo, hi = self.bounds
        return list(range(lo, hi + 1, int(self.step or 1)))

    def suggest(self, trial: optuna.Trial, key: str) -> dict[str, Any]:
        lo, hi = self.bounds
        return {key: trial.suggest_int(key, lo, hi, step=int(self.step or 1), log=self.log)}


class ValuesEntry(SearchEntry):
    """`choice: [...]` (any sampler) or `grid: [...]` (what the grid sampler enumerates): plain `values`."""

    takes_log_step = False
    value_types = None

    @field_validator("values", check_fields=False)
    @classmethod
    def _check_values(cls, values: list[Any]) -> list[Any]:
        if not values:
            raise verbatim_error("expected at least one value, found []")
        bad = [v for v in values if not isinstance(v, Scalar)]
        if bad:
            raise verbatim_error(f"expected plain values (str, number, bool, null), found {show(bad[0])}")
        if len({(type(v), v) for v in values}) != len(values):
            raise verbatim_error(f"expected distinct values, found {show(values)}")
        return values

    def domain(self) -> list[Any] | None:
        return list(self.values)

    def extreme_points(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        return [(f"{self.kind} {show(v)}", {key: v}) for v in self.values]

    def suggest(self, trial: optuna.Trial, key: str) -> dict[str, Any]:
        return {key: trial.suggest_categorical(key, list(self.values))}


class ChoiceEntry(ValuesEntry, _ChoiceKey):
    kind = "choice"


class GridEntry(ValuesEntry, _GridKey):
    kind = "grid"


class SimplexEntry(SearchEntry, _SimplexKey):
    """`simplex: [names]`: weights of a mapping field (`category_mix`), uniform on the simplex."""

    kind = "simplex"
    takes_log_step = False

    @field_validator("names")
    @classmethod
    def _check_names(cls, names: list[str]) -> list[str]:
        if len(names) < 2 or len(set(names)) != len(names) or not all(n.strip() and "." not in n for n in names):
            raise verbatim_error(f"expected at least 2 distinct names (no dots), found {show(names)}")
        return names

    def extreme_points(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        return [(f"corner {name}", {f"{key}.{n}": float(n == name) for n in self.names}) for name in self.names]

    def suggest(self, trial: optuna.Trial, key: str) -> dict[str, Any]:
        raw = {raw_key(key, n): trial.suggest_float(raw_key(key, n), SIMPLEX_LOW, 1.0) for n in self.names}
        weights = simplex_weights(list(raw.values()))
        return {**raw, **{f"{key}.{n}": w for n, w in zip(self.names, weights, strict=True)}}


def simplex_weights(raw: list[float]) -> list[float]:
    """Uniform draws u_i -> a point on the simplex: w_i = -log(u_i) / sum_j -log(u_j)."""
    exps = [-math.log(max(u, SIMPLEX_LOW)) for u in raw]
    total = math.fsum(exps)
    if total == 0.0:  # every u_i == 1 (only if a sampler proposes the corner exactly): centre
        return [1.0 / len(raw)] * len(raw)
    return [e / total for e in exps]


# The kinds by their key, in the order messages list them.
KINDS: dict[str, type[SearchEntry]] = {
    "float": FloatEntry,
    "int": IntEntry,
    "choice": ChoiceEntry,
    "simplex": SimplexEntry,
    "grid": GridEntry,
}
