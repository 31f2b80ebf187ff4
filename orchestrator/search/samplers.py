"""The Optuna samplers a spec can name: the registry, the `sampler:` section, its checks, a savable wrapper.

    sampler = make_sampler(spec.sampler, spec.search)         # seeded; grid: over the search's domains
    problems = sampler_problems(spec.sampler, spec.search, spec.budget.trials)   # at load time
    PortableSampler(functools.partial(make_sampler, spec.sampler, spec.search))  # what the searcher holds
    check_savable(searcher, spec.sampler.name)                 # SearcherNotSavable if Tune could not save it

`SAMPLERS` is the one list of sampler names: the spec's `sampler.name` takes exactly its keys, and a
sampler's options are the keyword arguments of its Optuna class whose type YAML can express.

Tune saves the searcher with the experiment by pickling it, sampler included, and a sampler may hold
things that do not pickle (NSGA-II holds a thread lock since Optuna 5.1). The sweep's sampler is
therefore a `PortableSampler`: it wraps the configured Optuna sampler and, when saved, keeps every
attribute of it that pickles (the random state included) and rebuilds the rest from a fresh one.
"""

from __future__ import annotations

import inspect
import math
import pickle
from collections.abc import Callable, Mapping
from typing import Any, Literal

import optuna
from pydantic import Field, TypeAdapter, ValidationError

from orchestrator.search.entries import SearchEntry
from orchestrator.spec_base import SpecModel
from orchestrator.yamlio import Loc, Problem, did_you_mean, show

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
    "gp": optuna.samplers.GPSampler,
}

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


class SamplerSpec(SpecModel):
    """The spec's `sampler:` section: which Optuna sampler, its seed and its options."""

    name: Literal[tuple(SAMPLERS)] = "tpe"  # type: ignore[valid-type]
    seed: int = Field(0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the Optuna sampler")


def grid_space(search: Mapping[str, SearchEntry]) -> dict[str, list[Any]]:
    """The grid of a search whose entries are all discrete (see sampler_problems)."""
    return {key: entry.domain() or [] for key, entry in search.items()}


def make_sampler(cfg: SamplerSpec, search: Mapping[str, SearchEntry]) -> optuna.samplers.BaseSampler:
    """The configured Optuna sampler, seeded with `cfg.seed` (grid: over `grid_space(search)`)."""
    kwargs = dict(cfg.options)
    if cfg.name == "grid":
        kwargs["search_space"] = grid_space(search)
    return SAMPLERS[cfg.name](seed=cfg.seed, **kwargs)


def sampler_problems(cfg: SamplerSpec, search: Mapping[str, SearchEntry], trials: int) -> list[Problem]:
    """Load-time checks of the sampler: its options, the grid's requirements, then a real construction."""
    problems = _option_problems(cfg)
    if cfg.name == "grid":
        problems += _grid_problems(search, trials)
    if not problems:
        try:
            make_sampler(cfg, search)
        except (TypeError, ValueError) as exc:
            problems.append(Problem(("sampler", "options"), f"the {cfg.name} sampler refused its options: {exc}"))
    return problems


def _option_problems(cfg: SamplerSpec) -> list[Problem]:
    """Options are keyword arguments of the Optuna sampler whose type YAML can express."""
    params = inspect.signature(SAMPLERS[cfg.name]).parameters
    settable = {name for name in params if name not in ("seed", "search_space")}
    problems: list[Problem] = []
    for name, value in cfg.options.items():
        loc: Loc = ("sampler", "options", name)
        if name not in settable:
            hint = "set it as sampler.seed" if name == "seed" else did_you_mean(name, settable).removeprefix("; ")
            problems.append(Problem(loc, f"unknown option {name!r} of the {cfg.name} sampler; {hint or 'it takes none'}"))
            continue
        annotation = str(params[name].annotation)  # Optuna's annotations are strings (PEP 563)
        if annotation not in _PLAIN_ANNOTATIONS:
            problems.append(
                Problem(
                    loc,
                    f"expected an option taking plain data (int, float, bool), found {name!r}, which takes {annotation}",
                )
            )
            continue
        try:
            TypeAdapter(_PLAIN_ANNOTATIONS[annotation]).validate_python(value, strict=True)
        except ValidationError:
            problems.append(Problem(loc, f"expected {annotation}, found {show(value)}"))
    return problems


def _grid_problems(search: Mapping[str, SearchEntry], trials: int) -> list[Problem]:
    """The grid sampler enumerates: every entry must be discrete, unconditional, and the grid big enough."""
    problems: list[Problem] = []
    for key, entry in search.items():
        if entry.domain() is None:
            problems.append(
                Problem(
                    ("search", key, entry.kind),
                    f"expected grid, choice, int or float with step for the grid sampler, found {entry.kind}"
                    + (" with log" if entry.log else ""),
                )
            )
        elif entry.when:
            problems.append(Problem(("search", key, "when"), "expected no conditions with the grid sampler, found when"))
    if not problems:
        size = math.prod(len(values) for values in grid_space(search).values())
        if trials > size:
            problems.append(
                Problem(("budget", "trials"), f"expected <= {size} (the grid's size) with the grid sampler, found {trials}")
            )
    return problems


# -- saving the sampler with the sweep ------------------------------------------------------------


class PortableSampler(optuna.samplers.BaseSampler):
    """The sampler `factory()` makes, in a form that pickles whatever that sampler holds.

    Every Optuna hook is passed to the wrapped sampler. Pickling keeps the wrapped sampler's
    attributes that pickle and the factory; unpickling makes a fresh sampler with the factory and
    puts the kept attributes back over it, so only what could not be saved (a lock) is new.
    """

    def __init__(self, factory: Callable[[], optuna.samplers.BaseSampler]):
        self.factory = factory
        self.inner = factory()

    def __str__(self) -> str:
        return f"PortableSampler({type(self.inner).__name__})"

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        try:
            self.inner.after_trial(study, trial, state, values)
        except RuntimeError as err:
            # The grid sampler stops the study once its grid is used up, which Optuna allows only
            # inside study.optimize. Tune asks and tells instead, and the spec's budget (checked to
            # be at most the grid's size) already ends the sweep: nothing is left to stop.
            if "Study.stop" not in str(err):
                raise

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def __getstate__(self) -> dict[str, Any]:
        kept = {}
        for name, value in vars(self.inner).items():
            try:
                pickle.dumps(value)
            except Exception:  # noqa: BLE001 -- whatever pickle refuses is rebuilt, not saved
                continue
            kept[name] = value
        return {"factory": self.factory, "kept": kept}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.factory = state["factory"]
        self.inner = self.factory()
        vars(self.inner).update(state["kept"])


class SearcherNotSavable(RuntimeError):
    """The searcher's state cannot be saved with the experiment (so a sweep could not resume)."""


def check_savable(searcher: Any, sampler_name: str) -> None:
    """Raise SearcherNotSavable, naming the sampler and the cause, if saving `searcher` would fail.

    Tune saves the searcher twice: the whole object in tuner.pkl, its attributes in a state file.
    """
    try:
        pickle.dumps(searcher)
        pickle.dumps(searcher.__dict__.copy())
    except Exception as exc:  # noqa: BLE001 -- any failure means the sweep could not resume
        raise SearcherNotSavable(
            f"the {sampler_name} sampler cannot be saved with the sweep, so it could not resume: "
            f"{type(exc).__name__}: {exc}"
        ) from None
