"""The base and the search checked against the Recipe and the world, before any trial runs.

    base, problems = check_base_and_search(data["base"], data["search"], world_info)

The base must be a valid Recipe; each search key must name a Recipe field (or a mapping component,
`category_mix.text`) with a kind that suits its type, and its condition earlier discrete keys; the
names a spec gives (categories, specialists, teachers) must be the world's. Finally base ⊕ every
extreme point of the search (both bounds, every choice, every simplex corner -- each entry alone,
then jointly) must be a valid Recipe, so `teacher_switch_step: {int: [0, 6]}` with nfe 4 fails at
load time, not in trial 5 an hour later.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import ValidationError

from orchestrator.search import trial_recipe
from orchestrator.search.conditions import holds, meeting_params, when_problems
from orchestrator.search.entries import KINDS, SearchEntry, SimplexEntry, ValuesEntry
from orchestrator.spec_base import pydantic_problems
from orchestrator.yamlio import Loc, Problem, did_you_mean, expected_name, show
from trainers.recipe import MIX_FIELDS, RECIPE_FIELDS, Recipe
from trainers.world import WorldInfo

# Above this many combinations of extreme points, only each search entry alone is checked.
MAX_JOINT_POINTS = 4096


def check_base_and_search(
    raw_base: Any, raw_search: Any, world: WorldInfo | None = None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The base as a Recipe, the search keys against the Recipe, then base ⊕ the search's extreme points.

    Returns the resolved base (None when broken). Structural problems of single entries are
    reported by the spec's own validation; the entries that pass are checked here, and both are
    checked against the world's names (categories, specialists, teachers) when it resolved.
    """
    search: dict[str, SearchEntry] = {}
    broken: set[str] = set()
    for key, raw in (raw_search if isinstance(raw_search, dict) else {}).items():
        try:
            search[key] = SearchEntry.model_validate(raw)
        except ValidationError:
            broken.add(key)
    problems = search_problems(search, broken)
    if world is not None:
        problems += world_name_problems(raw_base if isinstance(raw_base, dict) else {}, search, world)
    if not isinstance(raw_base, dict):
        return None, problems
    base, base_problems = _base_with_simplex(raw_base, search)
    base_problems += _recipe_problems(base, ("base",))
    if base_problems:
        return None, problems + base_problems
    faulty = broken | {str(p.loc[1]) for p in problems if len(p.loc) > 1}
    sound = {key: entry for key, entry in search.items() if key not in faulty and not set(entry.when or {}) & faulty}
    return base, problems + point_problems(base, sound, joint=not faulty)


def search_problems(search: dict[str, SearchEntry], broken: set[str]) -> list[Problem]:
    """Each search key names a Recipe field (or a mapping component) and suits its type."""
    problems: list[Problem] = []
    simplex_fields = {key for key, entry in search.items() if isinstance(entry, SimplexEntry)}
    dotted_ok = {f"{f}.<name>" for f in MIX_FIELDS}
    for key, entry in search.items():
        loc = ("search", key)
        field, dot, component = key.partition(".")
        if field not in RECIPE_FIELDS or (dot and (field not in MIX_FIELDS or not component or "." in component)):
            problems.append(Problem(loc, f"unknown search key {key!r}" + did_you_mean(key, RECIPE_FIELDS | dotted_ok)))
            continue
        if isinstance(entry, SimplexEntry) and key in MIX_FIELDS:
            pass
        elif dot and field in simplex_fields:
            problems.append(
                Problem(loc, f"expected no {field} component next to the simplex over {field}, found {key!r}")
            )
        elif field in MIX_FIELDS and not dot:
            problems.append(Problem(loc, f"expected a simplex (or dotted {field}.<name> keys), found {entry.kind}"))
        elif isinstance(entry, SimplexEntry):
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
            problems += when_problems(key, search, broken)
    return problems


def _field_kinds(field: str) -> set[str]:
    """Search kinds that can produce values of a Recipe field's type (a mapping component: a float weight)."""
    if "." in field:
        types: set[Any] = {float}
    else:
        annotation = Recipe.model_fields[field].annotation
        types = set(get_args(annotation)) or {annotation}
    return {kind for kind, cls in KINDS.items() if cls.fits(types)}


def world_name_problems(base: dict[str, Any], search: dict[str, SearchEntry], world: WorldInfo) -> list[Problem]:
    """Names the spec gives that the world must have: categories (base mix, simplex, dotted keys),
    specialists (base or searched by choice/grid) and the teachers of a teacher_weights schedule."""
    problems: list[Problem] = []

    def check(loc: Loc, what: str, names: Any, allowed: Sequence[str]) -> None:
        for name in names:
            if isinstance(name, str) and name not in allowed:
                problems.append(Problem(loc, expected_name(what, name, allowed, world.name)))

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
        if field in MIX_FIELDS and dot:
            check(("search", key), "category", [component], world.categories)
        elif field in MIX_FIELDS and isinstance(entry, SimplexEntry):
            check(("search", key, "simplex"), "category", entry.names, world.categories)
        elif field == "specialist" and not dot and isinstance(entry, ValuesEntry):
            check(("search", key, entry.kind), "specialist", entry.values, tuple(world.specialists))
    return problems


def _base_with_simplex(base: dict[str, Any], search: dict[str, SearchEntry]) -> tuple[dict[str, Any], list[Problem]]:
    """A simplex sets the whole mix, so the base mix is exactly the simplex's names (weights 1 until sampled)."""
    base, problems = dict(base), []
    for key, entry in search.items():
        if not isinstance(entry, SimplexEntry) or key not in MIX_FIELDS:
            continue
        given = base.get(key)
        if given is not None and not isinstance(given, dict):
            continue  # the Recipe check reports it
        if given is not None and set(given) != set(entry.names):
            problems.append(
                Problem(
                    ("base", key),
                    f"expected the names of the simplex at search.{key} "
                    f"({', '.join(entry.names)}) since it sets the whole mix, found {', '.join(given)}",
                )
            )
        base[key] = {name: 1.0 for name in entry.names}
    return base, problems


def _recipe_problems(values: dict[str, Any], loc: Loc) -> list[Problem]:
    try:
        Recipe.model_validate(values)
    except ValidationError as exc:
        return pydantic_problems(exc, Recipe, loc)
    return []


def point_problems(base: dict[str, Any], search: dict[str, SearchEntry], joint: bool) -> list[Problem]:
    """base ⊕ every extreme point of each entry alone, then (if `joint`) of all entries together, must be a valid Recipe."""
    problems = []
    for key, entry in search.items():
        context = meeting_params(entry.when)
        for label, params in entry.extreme_points(key):
            error = _recipe_error(base, {**context, **params})
            if error:
                problems.append(Problem(("search", key, entry.kind), f"{label} gives an invalid recipe: {error}"))
                break
    if problems or not joint:
        return problems
    per_entry = [[(key, p) for _, p in entry.extreme_points(key)] for key, entry in search.items()]
    if any(len(points) == 0 for points in per_entry) or math.prod(map(len, per_entry)) > MAX_JOINT_POINTS:
        return []
    for combo in itertools.product(*per_entry):
        params: dict[str, Any] = {}
        for key, point in combo:
            if holds(search[key].when, params):
                params.update(point)
        error = _recipe_error(base, params)
        if error:
            field = error.partition(":")[0]  # point at the search key the Recipe complains about
            loc: Loc = ("search", field) if field in search else ("search",)
            return [Problem(loc, f"the combination {show(params)} gives an invalid recipe: {error}")]
    return []


def _recipe_error(base: dict[str, Any], params: dict[str, Any]) -> str | None:
    """The first validation message of base ⊕ params as a Recipe, or None when valid."""
    try:
        trial_recipe(base, params)
    except ValidationError as exc:
        problem = pydantic_problems(exc, Recipe)[0]
        return f"{problem.where}: {problem.message}"
    except ValueError as exc:
        return str(exc)
    return None
