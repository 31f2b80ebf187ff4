"""The sweep spec: pydantic models of the YAML (DESIGN §4) and `load_spec`, which finds every problem.

    spec = load_spec("search_spaces/task_ratio.yaml")   # SweepSpec, or SpecError listing all problems
    recipe = spec.recipe(sampled_params)                # base ⊕ one sampled point -> trainers Recipe

Validation happens once, here, before anything starts: the structure (pydantic, strict), the
base recipe, the search keys against the Recipe's fields, the sampler options, the scheduler, and
finally base ⊕ every extreme point of the search (so `teacher_switch_step: {int: [0, 6]}` with
nfe 4 fails at load time, not in trial 5 an hour later).

The spec is also checked against its world (`trainers.world.world_info`, no weights loaded):
the world must resolve, and categories, specialists, teacher names and metrics must be the world's.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator import space
from orchestrator.errors import (
    Loc,
    Problem,
    SpecError,
    did_you_mean,
    line_of,
    pydantic_problems,
    read_yaml,
    show,
)
from trainers.recipe import MIX_FIELDS, RECIPE_FIELDS, Recipe
from trainers.world import WorldInfo, world_info

# Above this many combinations of extreme points, only each search entry alone is checked.
MAX_JOINT_POINTS = 4096


@cache
def default_world() -> WorldInfo:
    """The embedded tiny world's info: what metric helpers use when no spec's world is at hand."""
    return world_info("tiny")


def __getattr__(name: str) -> Any:
    """`KNOWN_METRICS` (metric -> max/min) and `GROUPED_METRICS`: the tiny world's, for older callers."""
    if name == "KNOWN_METRICS":
        return dict(default_world().metrics)
    if name == "GROUPED_METRICS":
        return tuple(default_world().grouped)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_known_metric(name: str, world: WorldInfo | None = None) -> bool:
    """True for a metric the world reports, or `t2i_score/<category>` / `edit_score/<edit_type>` of its groups."""
    return metric_problem(name, world or default_world()) is None


def better(metric: str, world: WorldInfo | None = None) -> Literal["max", "min"]:
    """The direction in which a known metric (or one of its groups) improves; KeyError for an unknown one."""
    return (world or default_world()).metrics[metric.partition("/")[0]]


def metric_problem(name: str, world: WorldInfo) -> str | None:
    """Why `name` is not a metric the world reports (None when it is one)."""
    head, slash, group = name.partition("/")
    if head not in world.metrics or (slash and head not in world.grouped):
        hint = did_you_mean(name, world.metrics).removeprefix("; ")
        groups = ", ".join(f"{metric}/<{kind}>" for metric, kind in world.grouped.items())
        return f"unknown metric {name!r} of world {world.name!r}; {hint}" + (f" (or {groups})" if groups else "")
    if slash and group not in world.groups(head):
        kind = world.grouped[head].replace("_", " ")
        return _expected_name(f"{kind} in {head}/<{world.grouped[head]}>", group, world.groups(head), world)
    return None


def _expected_name(what: str, found: str, allowed: Sequence[str], world: WorldInfo) -> str:
    """`expected a <what> of world 'tiny' (a, b, c), found 'x'; did you mean 'y'?` (the hint when one is close)."""
    close = difflib.get_close_matches(found, list(allowed), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    article = "an" if what[:1] in "aeiou" else "a"
    names = ", ".join(allowed) or "none"
    return f"expected {article} {what} of world {world.name!r} ({names}), found {found!r}{hint}"


def _world_in(info: ValidationInfo) -> WorldInfo | None:
    """The world a spec is validated against (load_spec's context); the tiny world outside a spec.

    None in the context means the spec's world did not resolve: its metrics are not checked then
    (the world's own problem is reported).
    """
    context = info.context if isinstance(info.context, dict) else {}
    return context["world"] if "world" in context else default_world()


def _check_metric(name: str, world: WorldInfo | None) -> str:
    problem = None if world is None else metric_problem(name, world)
    if problem:
        raise PydanticCustomError("spec", "{msg}", {"msg": problem})
    return name


def _problem(msg: str) -> PydanticCustomError:
    """A validation error whose message is used verbatim (no 'Value error, ' prefix, braces safe)."""
    return PydanticCustomError("spec", "{msg}", {"msg": msg})


class SpecModel(BaseModel):
    """Base of every spec section: unknown keys are errors, no type coercion, no inf/nan."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Scalar = str | int | float | bool | None  # what an Optuna categorical can hold


class SearchEntry(SpecModel):
    """One searched key: exactly one of float/int/choice/simplex/grid, plus log/step/when options."""

    float_: list[float] | None = Field(None, alias="float", description="[lower, upper]")
    int_: list[int] | None = Field(None, alias="int", description="[lower, upper], both included")
    choice: list[Any] | None = None
    simplex: list[str] | None = Field(None, description="names of a mapping field's components")
    grid: list[Any] | None = Field(None, description="values enumerated by the grid sampler")
    log: bool = False
    step: float | None = None
    when: dict[str, Any] | None = Field(None, description="{earlier_param: value or [values]}")

    @property
    def kind(self) -> str:
        """float | int | choice | simplex | grid (exactly one is set after validation)."""
        return next(k for k in space.KINDS if getattr(self, space.attr(k)) is not None)

    @property
    def bounds(self) -> list[float] | list[int]:
        return self.float_ if self.float_ is not None else self.int_  # type: ignore[return-value]

    @field_validator("float_", "int_")
    @classmethod
    def _check_bounds(cls, bounds: list[float] | None) -> list[float] | None:
        if bounds is None:  # explicit null: reported by _check_one_kind
            return None
        if len(bounds) != 2:
            raise _problem(f"expected [lower, upper], found {show(bounds)}")
        if not bounds[0] < bounds[1]:
            raise _problem(f"expected lower bound < upper bound, found {show(bounds)}")
        return bounds

    @field_validator("choice", "grid")
    @classmethod
    def _check_values(cls, values: list[Any] | None) -> list[Any] | None:
        if values is None:
            return None
        if not values:
            raise _problem("expected at least one value, found []")
        bad = [v for v in values if not isinstance(v, Scalar)]
        if bad:
            raise _problem(f"expected plain values (str, number, bool, null), found {show(bad[0])}")
        if len({(type(v), v) for v in values}) != len(values):
            raise _problem(f"expected distinct values, found {show(values)}")
        return values

    @field_validator("simplex")
    @classmethod
    def _check_simplex(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        if (
            len(names) < 2
            or len(set(names)) != len(names)
            or not all(n.strip() and "." not in n for n in names)
        ):
            raise _problem(f"expected at least 2 distinct names (no dots), found {show(names)}")
        return names

    @field_validator("log")
    @classmethod
    def _check_log(cls, log: bool, info: ValidationInfo) -> bool:
        bounds = info.data.get("float_") or info.data.get("int_")
        if log and bounds and bounds[0] <= 0:
            raise _problem(f"expected a lower bound > 0 for a log scale, found {show(bounds)}")
        return log

    @field_validator("step")
    @classmethod
    def _check_step(cls, step: float | None, info: ValidationInfo) -> float | None:
        if step is None:
            return None
        if step <= 0:
            raise _problem(f"expected a step > 0, found {step}")
        if info.data.get("log"):
            raise _problem("expected either log or step, found both")
        if info.data.get("int_") is not None and step != int(step):
            raise _problem(f"expected an integer step for an int range, found {step}")
        bounds = info.data.get("float_") or info.data.get("int_")
        if bounds:
            n = (bounds[1] - bounds[0]) / step
            if abs(n - round(n)) > 1e-9:
                raise _problem(
                    f"expected (upper - lower) to be a multiple of the step, found {show(bounds)} step {step}"
                )
        return step

    @field_validator("when")
    @classmethod
    def _check_when(cls, when: dict[str, Any] | None) -> dict[str, Any] | None:
        if when is not None and not when:
            raise _problem("expected {param: value or [values]}, found {}")
        return when

    @model_validator(mode="after")
    def _check_one_kind(self) -> SearchEntry:
        given = [k for k in space.KINDS if getattr(self, space.attr(k)) is not None]
        if len(given) != 1:
            raise _problem(
                f"expected exactly one of {', '.join(space.KINDS)}, found {', '.join(given) or 'none'}"
            )
        if (self.log or self.step is not None) and self.kind not in ("float", "int"):
            raise _problem(f"expected log/step only with float or int, found them with {self.kind}")
        return self


class Objective(SpecModel):
    metric: str
    mode: Literal["max", "min"]

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str, info: ValidationInfo) -> str:
        return _check_metric(metric, _world_in(info))


class SamplerSpec(SpecModel):
    name: Literal["tpe", "nsga2", "random", "grid", "gp"] = "tpe"
    seed: int = Field(0, ge=0)
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the Optuna sampler"
    )


class SchedulerSpec(SpecModel):
    """Early stopping across trials: ASHA on a scalar metric, or FIFO (none)."""

    name: Literal["asha", "fifo"]
    metric: str | None = Field(None, description="scalar for ASHA; defaults to the single objective")
    mode: Literal["max", "min"] | None = Field(
        None, description="defaults to the objective's, else the metric's natural one"
    )
    grace_steps: int = Field(20, ge=1, description="generator steps before a trial may be stopped")
    reduction_factor: float = Field(3.0, gt=1.0)
    max_steps: int | None = Field(None, ge=1, description="defaults to the recipe's steps")

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str | None, info: ValidationInfo) -> str | None:
        return None if metric is None else _check_metric(metric, _world_in(info))


class Budget(SpecModel):
    trials: int = Field(8, ge=1)
    concurrent: int = Field(1, ge=1)
    time_limit_s: float | None = Field(None, gt=0)
    max_failures: int = Field(2, ge=0, description="retries of a failed trial (e.g. a lost node)")


class Resources(SpecModel):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, description="fractions share a GPU between trials")


class Tracking(SpecModel):
    uri: str | None = Field(None, min_length=1, description="MLflow URI; null -> sqlite:///mlflow.db")


class Promote(SpecModel):
    """Defaults of `python -m orchestrator.promote runs/<name>` (its flags override them)."""

    steps: int = Field(2000, ge=1, description="generator steps of the full run")
    pick: str = Field("knee", description="knee | best | best:<metric> | trial:<id>")
    seeds: int = Field(
        1, ge=1, description="> 1: re-run the top candidates with this many seeds before promoting the leader"
    )
    top: int = Field(3, ge=2, description="candidates the seed check re-runs (in the pick rule's order)")

    @field_validator("pick")
    @classmethod
    def _check_pick(cls, pick: str, info: ValidationInfo) -> str:
        head, colon, arg = pick.partition(":")
        if (head in ("knee", "best") and not colon) or (head == "trial" and arg.strip()):
            return pick
        if head == "best" and colon:
            _check_metric(arg, _world_in(info))
            return pick
        raise _problem(f"expected knee, best, best:<metric> or trial:<id>, found {pick!r}")


class WorldSpec(SpecModel):
    """Where trials distil: `tiny` (the embedded world) with options, or a path to a world config.

    `world: tiny` is short for `world: {name: tiny}`. The options are the tiny world's own
    (trainers.tinyworld.world.TinyWorld); tests point `checkpoints` at micro teachers and shrink the pools.
    """

    name: str = Field("tiny", min_length=1, description="'tiny' or a path to a world config")
    checkpoints: str | None = Field(
        None, min_length=1, description="folder with base/, text/, judge/ (relative to the spec file)"
    )
    resolution: Literal[16, 32] | None = None
    train_prompts: int | None = Field(None, ge=3)
    train_edits: int | None = Field(None, ge=1)
    heldout_prompts: int | None = Field(None, ge=3)
    heldout_edits: int | None = Field(None, ge=1)

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments of `trainers.world.load_world` besides the name (unset ones omitted)."""
        return self.model_dump(exclude={"name"}, exclude_none=True)


class SweepSpec(SpecModel):
    """A validated sweep: what to vary (search), around what (base), judged how (objectives), on what budget."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="run dir runs/<name>, MLflow experiment"
    )
    world: WorldSpec = Field(
        default_factory=WorldSpec, description="'tiny', a path, or {name: tiny, <options>}"
    )
    base: dict[str, Any] = Field(default_factory=dict, description="fixed Recipe fields")
    search: dict[str, SearchEntry] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec | None = None
    budget: Budget = Field(default_factory=Budget)
    resources: Resources = Field(default_factory=Resources)
    tracking: Tracking = Field(default_factory=Tracking)
    promote: Promote = Field(default_factory=Promote)

    @field_validator("world", mode="before")
    @classmethod
    def _world_shorthand(cls, world: Any) -> Any:
        """`world: tiny` (a string) is short for `world: {name: tiny}`."""
        return {"name": world} if isinstance(world, str) else world

    @property
    def directions(self) -> list[str]:
        """Optuna study directions, one per objective."""
        return ["maximize" if o.mode == "max" else "minimize" for o in self.objectives]

    @property
    def base_recipe(self) -> Recipe:
        return Recipe.model_validate(self.base)

    def recipe(self, params: dict[str, Any]) -> Recipe:
        """base ⊕ sampled params (raw simplex draws dropped) -> Recipe."""
        return Recipe.from_params(self.base, space.recipe_params(params))


# -- loading -------------------------------------------------------------------------------------


def load_spec(path: str | Path) -> SweepSpec:
    """Read, validate and resolve a sweep spec; raise SpecError listing every problem with file:line."""
    path = Path(path)
    root, data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(path, [Problem((), f"expected a mapping of spec sections, found {show(data)}", 1)])
    # The world first: every other section is checked against what it offers (no weights loaded).
    world, info, problems = _world_of(data.get("world", "tiny"), path)
    try:
        spec: SweepSpec | None = SweepSpec.model_validate(data, context={"world": info})
    except ValidationError as exc:
        problems += pydantic_problems(exc, SweepSpec)
        spec = None
    # Base and search are checked against each other even when another section is broken,
    # so that one run of the loader reports everything.
    base, search_problems = _check_base_and_search(data.get("base", {}), data.get("search"), info)
    problems += search_problems
    if spec is not None:
        spec, spec_problems = _resolve(spec, base, world or spec.world, info)
        problems += spec_problems
    if problems or spec is None:
        unique = dict.fromkeys(Problem(p.loc, p.message, p.line or line_of(root, p.loc)) for p in problems)
        raise SpecError(path, sorted(unique, key=lambda p: p.line or 0))
    return spec


def _check_base_and_search(
    raw_base: Any, raw_search: Any, world: WorldInfo | None = None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The base as a Recipe, the search keys against the Recipe, then base ⊕ the search's extreme points.

    Returns the resolved base (None when broken). Structural problems of single entries are
    reported by SweepSpec's validation; the entries that pass are checked here, and both are
    checked against the world's names (categories, specialists, teachers) when it resolved.
    """
    search: dict[str, SearchEntry] = {}
    broken: set[str] = set()
    for key, raw in (raw_search if isinstance(raw_search, dict) else {}).items():
        try:
            search[key] = SearchEntry.model_validate(raw)
        except ValidationError:
            broken.add(key)
    problems = _search_problems(search, broken)
    if world is not None:
        problems += _world_name_problems(raw_base if isinstance(raw_base, dict) else {}, search, world)
    if not isinstance(raw_base, dict):
        return None, problems
    base, base_problems = _base_with_simplex(raw_base, search)
    base_problems += _recipe_problems(base, ("base",))
    if base_problems:
        return None, problems + base_problems
    faulty = broken | {str(p.loc[1]) for p in problems if len(p.loc) > 1}
    sound = {
        key: entry
        for key, entry in search.items()
        if key not in faulty and not set(entry.when or {}) & faulty
    }
    return base, problems + _point_problems(base, sound, joint=not faulty)


def _resolve(
    spec: SweepSpec, base: dict[str, Any] | None, world: WorldSpec, info: WorldInfo | None
) -> tuple[SweepSpec, list[Problem]]:
    """Checks across the other sections; fills the defaults that depend on others (base mix, ASHA metric)."""
    problems = _objective_problems(spec.objectives)
    scheduler, scheduler_problems = _resolve_scheduler(spec, info)
    problems += scheduler_problems
    problems += [
        Problem(loc, msg)
        for loc, msg in space.sampler_problems(spec.sampler, spec.search, spec.budget.trials)
    ]
    return spec.model_copy(
        update={"base": base if base is not None else spec.base, "scheduler": scheduler, "world": world}
    ), problems


def _world_of(raw: Any, path: Path) -> tuple[WorldSpec | None, WorldInfo | None, list[Problem]]:
    """The `world:` section resolved (paths absolute) and its info; (None, None, []) when its
    structure is broken (SweepSpec's validation reports that)."""
    try:
        world = WorldSpec.model_validate({"name": raw} if isinstance(raw, str) else raw)
    except ValidationError:
        return None, None, []
    world, problems = _resolve_world(world, path)
    if problems:
        return world, None, problems
    target = world.name if world.name == "tiny" else str(_absolute(world.name, path))
    try:
        return world, world_info(target, **world.options), []
    except ValueError as exc:
        loc: Loc = ("world",) if not world.options else ("world", "name")
        reason = str(exc).removeprefix(f"world {target!r}: ")
        problem = Problem(loc, f"expected a world this version can load, found {world.name!r}: {reason}")
        return world, None, [problem]


def _absolute(value: str, spec_path: Path) -> Path:
    """A path from the spec, relative to the spec file's folder."""
    return Path(value) if Path(value).is_absolute() else (spec_path.parent / value).resolve()


def _resolve_world(world: WorldSpec, path: Path) -> tuple[WorldSpec, list[Problem]]:
    """Paths are relative to the spec file and must exist; they are made absolute for the Ray workers."""

    def absolute(value: str) -> Path:
        return _absolute(value, path)

    problems: list[Problem] = []
    update: dict[str, Any] = {}
    loc: Loc = ("world",) if not world.options else ("world", "name")
    if world.name != "tiny":
        if not absolute(world.name).exists():
            problems.append(Problem(loc, f"expected 'tiny' or an existing path, found {world.name!r}"))
        elif world.options:
            given = ", ".join(world.options)
            problems.append(Problem(("world",), f"expected options only with name 'tiny', found {given}"))
    if world.checkpoints is not None:
        folder = absolute(world.checkpoints)
        if not folder.is_dir():
            problems.append(
                Problem(("world", "checkpoints"), f"expected an existing folder, found {world.checkpoints!r}")
            )
        update["checkpoints"] = str(folder)
    return world.model_copy(update=update), problems


def _world_name_problems(
    base: dict[str, Any], search: dict[str, SearchEntry], world: WorldInfo
) -> list[Problem]:
    """Names the spec gives that the world must have: categories (base mix, simplex, dotted keys),
    specialists (base or searched by choice/grid) and the teachers of a teacher_weights schedule."""
    problems: list[Problem] = []

    def check(loc: Loc, what: str, names: Any, allowed: Sequence[str]) -> None:
        for name in names:
            if isinstance(name, str) and name not in allowed:
                problems.append(Problem(loc, _expected_name(what, name, allowed, world)))

    for field in MIX_FIELDS:
        mix = base.get(field)
        if isinstance(mix, dict):
            for name in mix:
                check(("base", field, name), "category", [name], world.categories)
    if isinstance(base.get("specialist"), str):
        check(("base", "specialist"), "specialist", [base["specialist"]], tuple(world.specialists))
    schedule = base.get("teacher_weights")
    if isinstance(schedule, dict):
        for name in schedule:
            check(("base", "teacher_weights", name), "teacher", [name], world.teachers)
    for key, entry in search.items():
        field, dot, component = key.partition(".")
        if field not in MIX_FIELDS and field != "specialist":
            continue
        if field in MIX_FIELDS and dot:
            check(("search", key), "category", [component], world.categories)
        elif field in MIX_FIELDS and entry.kind == "simplex":
            check(("search", key, "simplex"), "category", entry.simplex or [], world.categories)
        elif field == "specialist" and not dot and entry.kind in ("choice", "grid"):
            check(("search", key, entry.kind), "specialist", space.domain(entry) or [], tuple(world.specialists))
    return problems


def _recipe_problems(values: dict[str, Any], loc: Loc) -> list[Problem]:
    try:
        Recipe.model_validate(values)
    except ValidationError as exc:
        return pydantic_problems(exc, Recipe, loc)
    return []


def _field_kinds(field: str) -> set[str]:
    """Search kinds that can produce values of a Recipe field's type."""
    if "." in field:  # a mapping component: a float weight
        return {"float", "int", "choice", "grid"}
    annotation = Recipe.model_fields[field].annotation
    types = set(get_args(annotation)) or {annotation}
    if float in types:
        return {"float", "int", "choice", "grid"}
    if int in types:
        return {"int", "choice", "grid"}
    return {"choice", "grid"}


def _search_problems(search: dict[str, SearchEntry], broken: set[str]) -> list[Problem]:
    """Each search key names a Recipe field (or a mapping component) and suits its type."""
    problems: list[Problem] = []
    simplex_fields = {key for key, entry in search.items() if entry.kind == "simplex"}
    dotted_ok = {f"{f}.<name>" for f in MIX_FIELDS}
    earlier: list[tuple[str, SearchEntry]] = []
    for key, entry in search.items():
        loc = ("search", key)
        field, dot, component = key.partition(".")
        if field not in RECIPE_FIELDS or (
            dot and (field not in MIX_FIELDS or not component or "." in component)
        ):
            problems.append(
                Problem(loc, f"unknown search key {key!r}" + did_you_mean(key, RECIPE_FIELDS | dotted_ok))
            )
            continue
        if entry.kind == "simplex" and key in MIX_FIELDS:
            pass
        elif dot and field in simplex_fields:
            problems.append(
                Problem(loc, f"expected no {field} component next to the simplex over {field}, found {key!r}")
            )
        elif field in MIX_FIELDS and not dot:
            problems.append(
                Problem(loc, f"expected a simplex (or dotted {field}.<name> keys), found {entry.kind}")
            )
        elif entry.kind == "simplex" and (dot or field not in MIX_FIELDS):
            problems.append(
                Problem(
                    (*loc, "simplex"),
                    f"expected a simplex only on {', '.join(sorted(MIX_FIELDS))}, found it on {key!r}",
                )
            )
        elif entry.kind not in _field_kinds(key):
            problems.append(
                Problem(
                    (*loc, entry.kind),
                    f"expected one of {', '.join(sorted(_field_kinds(key)))} for {key}, found {entry.kind}",
                )
            )
        if entry.when:
            later = set(search) - {k for k, _ in earlier}
            problems += _when_problems(entry.when, earlier, later, broken, loc)
        earlier.append((key, entry))
    return problems


def _when_problems(
    when: dict[str, Any], earlier: list[tuple[str, SearchEntry]], later: set[str], broken: set[str], loc: Loc
) -> list[Problem]:
    """A condition names an earlier discrete search key, with values from its domain."""
    problems = []
    domains = {key: space.domain(entry) for key, entry in earlier}
    for param, wanted in when.items():
        where = (*loc, "when", param)
        if param in broken:  # its own problems are reported already
            continue
        if param not in domains:
            found = f"{param!r}, listed after it" if param in later else f"unknown {param!r}"
            hint = did_you_mean(param, domains) if domains and param not in later else ""
            problems.append(
                Problem(where, f"expected a search key listed before this one, found {found}{hint}")
            )
        elif domains[param] is None:
            problems.append(
                Problem(where, f"expected a condition on a choice, grid or int key, found one on {param!r}")
            )
        else:
            values = wanted if isinstance(wanted, list) else [wanted]
            missing = [v for v in values if v not in domains[param]]
            if not values or missing:
                problems.append(
                    Problem(
                        where, f"expected values of {param} ({show(domains[param])}), found {show(wanted)}"
                    )
                )
    return problems


def _base_with_simplex(
    base: dict[str, Any], search: dict[str, SearchEntry]
) -> tuple[dict[str, Any], list[Problem]]:
    """A simplex sets the whole mix, so the base mix is exactly the simplex's names (weights 1 until sampled)."""
    base, problems = dict(base), []
    for key, entry in search.items():
        if entry.kind != "simplex" or key not in MIX_FIELDS:
            continue
        given = base.get(key)
        if given is not None and not isinstance(given, dict):
            continue  # the Recipe check reports it
        if given is not None and set(given) != set(entry.simplex or []):
            problems.append(
                Problem(
                    ("base", key),
                    f"expected the names of the simplex at search.{key} "
                    f"({', '.join(entry.simplex or [])}) since it sets the whole mix, found {', '.join(given)}",
                )
            )
        base[key] = {name: 1.0 for name in entry.simplex or []}
    return base, problems


def _objective_problems(objectives: list[Objective]) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for i, objective in enumerate(objectives):
        if objective.metric in seen:
            problems.append(
                Problem(
                    ("objectives", i, "metric"),
                    f"expected distinct metrics, found {objective.metric!r} twice",
                )
            )
        seen.add(objective.metric)
    return problems


def _resolve_scheduler(
    spec: SweepSpec, world: WorldInfo | None = None
) -> tuple[SchedulerSpec | None, list[Problem]]:
    """ASHA stops trials on one scalar: the single objective by default; explicit when there are several."""
    scheduler = spec.scheduler
    if scheduler is None or scheduler.name == "fifo":
        return scheduler, []
    metric, mode = scheduler.metric, scheduler.mode
    if metric is None:
        if len(spec.objectives) > 1:
            return scheduler, [
                Problem(
                    ("scheduler",),
                    "expected an explicit scalar metric for ASHA with several objectives, found none (e.g. metric: score)",
                )
            ]
        metric = spec.objectives[0].metric
    if mode is None:
        natural = (world or default_world()).metrics.get(metric.partition("/")[0], "max")
        mode = next((o.mode for o in spec.objectives if o.metric == metric), natural)
    if scheduler.max_steps is not None and scheduler.max_steps < scheduler.grace_steps:
        return scheduler, [
            Problem(
                ("scheduler", "max_steps"),
                f"expected >= grace_steps ({scheduler.grace_steps}), found {scheduler.max_steps}",
            )
        ]
    return scheduler.model_copy(update={"metric": metric, "mode": mode}), []


def _point_problems(base: dict[str, Any], search: dict[str, SearchEntry], joint: bool) -> list[Problem]:
    """base ⊕ every extreme point of each entry alone, then (if `joint`) of all entries together, must be a valid Recipe."""
    problems = []
    for key, entry in search.items():
        context = {param: space.first_value(wanted) for param, wanted in (entry.when or {}).items()}
        for label, params in space.extreme_points(key, entry):
            error = _recipe_error(base, {**context, **params})
            if error:
                problems.append(
                    Problem(("search", key, entry.kind), f"{label} gives an invalid recipe: {error}")
                )
                break
    if problems or not joint:
        return problems
    per_entry = [[(key, p) for _, p in space.extreme_points(key, entry)] for key, entry in search.items()]
    if any(len(points) == 0 for points in per_entry) or _product_size(per_entry) > MAX_JOINT_POINTS:
        return []
    for combo in itertools.product(*per_entry):
        params: dict[str, Any] = {}
        for key, point in combo:
            if space.condition_holds(search[key].when, params):
                params.update(point)
        error = _recipe_error(base, params)
        if error:
            field = error.partition(":")[0]  # point at the search key the Recipe complains about
            loc: Loc = ("search", field) if field in search else ("search",)
            return [Problem(loc, f"the combination {show(params)} gives an invalid recipe: {error}")]
    return []


def _product_size(lists: list[list[Any]]) -> int:
    size = 1
    for items in lists:
        size *= len(items)
    return size


def _recipe_error(base: dict[str, Any], params: dict[str, Any]) -> str | None:
    """The first validation message of base ⊕ params as a Recipe, or None when valid."""
    try:
        Recipe.from_params(base, params)
    except ValidationError as exc:
        problem = pydantic_problems(exc, Recipe)[0]
        return f"{problem.where}: {problem.message}"
    except ValueError as exc:
        return str(exc)
    return None


def resolved_dict(spec: SweepSpec) -> dict[str, Any]:
    """The spec with every default filled in (search entries show only what was given)."""
    data = spec.model_dump(mode="json", by_alias=True)
    data["search"] = {
        key: entry.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for key, entry in spec.search.items()
    }
    if not spec.world.options:  # shown as written: `world: tiny`
        data["world"] = spec.world.name
    return data


def spec_hash(spec: SweepSpec) -> str:
    """Hash of the resolved spec without its `promote` section: what the sweep's results depend on.

    Comments and key order in the YAML do not change it, and neither does editing the promotion
    defaults after a sweep (a --resume or a promotion is refused only when the trials would differ).
    """
    data = resolved_dict(spec)
    data.pop("promote", None)
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
