"""The search section as Optuna distributions: the only module that knows them.

    sample = build_space(spec.search)          # define-by-run: optuna.Trial -> params dict
    sampler = make_sampler(spec.sampler, spec.search)

Params are flat dotted keys, spelled like the Recipe (`t2i_edit_ratio`, `category_mix.text`).
A simplex over a mapping field is sampled uniformly on the simplex with Optuna's recipe: one
float `u_i` per name (kept as the raw param `category_mix.raw.<name>`), `w_i = -log(u_i)`,
normalised -- i.e. Dirichlet(1, ..., 1), whatever sampler proposes the u_i independently.
Both the raw u_i and the weights are returned; `recipe_params` drops the raw ones.

A conditional entry (`when: {param: values}`) is sampled only when the earlier param took one
of those values; otherwise the base value stands and the key is absent from the params.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
from pydantic import TypeAdapter, ValidationError

from orchestrator.errors import Loc, did_you_mean, show

if TYPE_CHECKING:
    from orchestrator.spec import SamplerSpec, SearchEntry

KINDS = ("float", "int", "choice", "simplex", "grid")

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "gp": optuna.samplers.GPSampler,
}

# u_i is drawn in [SIMPLEX_LOW, 1]: -log(u) stays finite (Optuna's recipe uses (0, 1]).
SIMPLEX_LOW = 1e-12

# Sampler keyword arguments a YAML spec can give: those whose annotation is plain data.
# (Callables, mutation/crossover objects etc. cannot come from YAML.)
_PLAIN_ANNOTATIONS: dict[str, Any] = {
    "int": int,
    "float": float,
    "bool": bool,
    "int | None": int | None,
    "float | None": float | None,
    "bool | None": bool | None,
}


def attr(kind: str) -> str:
    """SearchEntry attribute holding a kind (`float`/`int` are shadowed names, hence `float_`)."""
    return f"{kind}_" if kind in ("float", "int") else kind


def raw_key(field: str, name: str) -> str:
    """Optuna param name of a simplex component's uniform draw."""
    return f"{field}.raw.{name}"


def is_raw_key(key: str) -> bool:
    return ".raw." in key


def recipe_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled params without the raw simplex draws: what `Recipe.from_params` takes."""
    return {key: value for key, value in params.items() if not is_raw_key(key)}


def simplex_weights(raw: list[float]) -> list[float]:
    """Uniform draws u_i -> a point on the simplex: w_i = -log(u_i) / sum_j -log(u_j)."""
    exps = [-math.log(max(u, SIMPLEX_LOW)) for u in raw]
    total = math.fsum(exps)
    if total == 0.0:  # every u_i == 1 (only if a sampler proposes the corner exactly): centre
        return [1.0 / len(raw)] * len(raw)
    return [e / total for e in exps]


def condition_holds(when: Mapping[str, Any] | None, params: Mapping[str, Any]) -> bool:
    """True when every `when` param was sampled with one of its wanted values."""
    for param, wanted in (when or {}).items():
        values = wanted if isinstance(wanted, list) else [wanted]
        if param not in params or params[param] not in values:
            return False
    return True


def first_value(wanted: Any) -> Any:
    """A value that satisfies a `when` condition (its first)."""
    return wanted[0] if isinstance(wanted, list) and wanted else wanted


def domain(entry: SearchEntry) -> list[Any] | None:
    """Every value a discrete entry can take (for conditions and grids); None when continuous."""
    if entry.kind in ("choice", "grid"):
        return list(entry.choice if entry.kind == "choice" else entry.grid)  # type: ignore[arg-type]
    if entry.kind == "int" and not entry.log:
        lo, hi = entry.int_  # type: ignore[misc]
        return list(range(lo, hi + 1, int(entry.step or 1)))
    if entry.kind == "float" and entry.step is not None:
        lo, hi = entry.float_  # type: ignore[misc]
        return [round(lo + i * entry.step, 12) for i in range(round((hi - lo) / entry.step) + 1)]
    return None


def extreme_points(key: str, entry: SearchEntry) -> list[tuple[str, dict[str, Any]]]:
    """Representative params of one entry, labelled: both bounds, every choice, every simplex corner."""
    match entry.kind:
        case "float" | "int":
            lo, hi = entry.bounds
            return [(f"lower bound {lo}", {key: lo}), (f"upper bound {hi}", {key: hi})]
        case "choice" | "grid":
            return [(f"{entry.kind} {show(v)}", {key: v}) for v in domain(entry) or []]
        case _:
            names = entry.simplex or []
            return [(f"corner {name}", {f"{key}.{n}": float(n == name) for n in names}) for name in names]


def build_space(search: Mapping[str, SearchEntry]) -> Callable[[optuna.Trial], dict[str, Any]]:
    """The define-by-run function: asks the trial for each entry in spec order, skipping unmet conditions."""
    return DefineByRun(list(search.items()))


class DefineByRun:
    """The define-by-run function as a plain object: Ray's OptunaSearch pickles it with its state."""

    def __init__(self, entries: list[tuple[str, SearchEntry]]):
        self.entries = entries

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, entry in self.entries:
            if condition_holds(entry.when, params):
                params.update(_suggest(trial, key, entry))
        return params


def _suggest(trial: optuna.Trial, key: str, entry: SearchEntry) -> dict[str, Any]:
    match entry.kind:
        case "float":
            lo, hi = entry.float_  # type: ignore[misc]
            value = trial.suggest_float(key, lo, hi, log=entry.log, step=entry.step)
            # Optuna's lo + k·step carries float noise (0.7000000000000001): show the grid value.
            return {key: value if entry.step is None else round(value, 12)}
        case "int":
            lo, hi = entry.int_  # type: ignore[misc]
            return {key: trial.suggest_int(key, lo, hi, step=int(entry.step or 1), log=entry.log)}
        case "choice" | "grid":
            return {key: trial.suggest_categorical(key, domain(entry))}
        case _:
            names = entry.simplex or []
            raw = {raw_key(key, n): trial.suggest_float(raw_key(key, n), SIMPLEX_LOW, 1.0) for n in names}
            weights = simplex_weights(list(raw.values()))
            return {**raw, **{f"{key}.{n}": w for n, w in zip(names, weights, strict=True)}}


# -- samplers -------------------------------------------------------------------------------------


def grid_space(search: Mapping[str, SearchEntry]) -> dict[str, list[Any]]:
    """The grid of a search whose entries are all discrete (see grid_problems)."""
    return {key: domain(entry) or [] for key, entry in search.items()}


def make_sampler(cfg: SamplerSpec, search: Mapping[str, SearchEntry]) -> optuna.samplers.BaseSampler:
    """The configured Optuna sampler, seeded with `cfg.seed` (grid: over `grid_space(search)`)."""
    kwargs = dict(cfg.options)
    if cfg.name == "grid":
        kwargs["search_space"] = grid_space(search)
    return SAMPLERS[cfg.name](seed=cfg.seed, **kwargs)


def sampler_problems(
    cfg: SamplerSpec, search: Mapping[str, SearchEntry], trials: int
) -> list[tuple[Loc, str]]:
    """Load-time checks of the sampler: its options, the grid's requirements, then a real construction."""
    problems = _option_problems(cfg)
    if cfg.name == "grid":
        problems += _grid_problems(search, trials)
    if not problems:
        try:
            make_sampler(cfg, search)
        except (TypeError, ValueError) as exc:
            problems.append((("sampler", "options"), f"the {cfg.name} sampler refused its options: {exc}"))
    return problems


def _option_problems(cfg: SamplerSpec) -> list[tuple[Loc, str]]:
    """Options are keyword arguments of the Optuna sampler whose type YAML can express."""
    params = inspect.signature(SAMPLERS[cfg.name]).parameters
    settable = {name for name in params if name not in ("seed", "search_space")}
    problems: list[tuple[Loc, str]] = []
    for name, value in cfg.options.items():
        loc: Loc = ("sampler", "options", name)
        if name not in settable:
            hint = (
                "set it as sampler.seed"
                if name == "seed"
                else did_you_mean(name, settable).removeprefix("; ")
            )
            problems.append(
                (loc, f"unknown option {name!r} of the {cfg.name} sampler; {hint or 'it takes none'}")
            )
            continue
        annotation = str(params[name].annotation)  # Optuna's annotations are strings (PEP 563)
        if annotation not in _PLAIN_ANNOTATIONS:
            problems.append(
                (
                    loc,
                    f"expected an option taking plain data (int, float, bool), found {name!r}, which takes {annotation}",
                )
            )
            continue
        try:
            TypeAdapter(_PLAIN_ANNOTATIONS[annotation]).validate_python(value, strict=True)
        except ValidationError:
            problems.append((loc, f"expected {annotation}, found {show(value)}"))
    return problems


def _grid_problems(search: Mapping[str, SearchEntry], trials: int) -> list[tuple[Loc, str]]:
    """The grid sampler enumerates: every entry must be discrete, unconditional, and the grid big enough."""
    problems: list[tuple[Loc, str]] = []
    for key, entry in search.items():
        if domain(entry) is None:
            problems.append(
                (
                    ("search", key, entry.kind),
                    f"expected grid, choice, int or float with step for the grid sampler, found {entry.kind}"
                    + (" with log" if entry.log else ""),
                )
            )
        elif entry.when:
            problems.append(
                (("search", key, "when"), "expected no conditions with the grid sampler, found when")
            )
    if not problems:
        size = math.prod(len(values) for values in grid_space(search).values())
        if trials > size:
            problems.append(
                (
                    ("budget", "trials"),
                    f"expected <= {size} (the grid's size) with the grid sampler, found {trials}",
                )
            )
    return problems
