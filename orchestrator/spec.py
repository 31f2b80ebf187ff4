"""The sweep spec: pydantic models of the YAML sections (DESIGN §4) and `load_spec`, which finds every problem.

    spec = load_spec("search_spaces/task_ratio.yaml")   # SweepSpec, or SpecError listing all problems
    resolved_dict(spec), spec_hash(spec)                 # the spec with its defaults; what results depend on

Validation happens once, here, before anything starts: the world first (`world_spec`), then the
structure of every section (pydantic, strict: the search entries in `orchestrator.search.entries`,
the sampler in `orchestrator.search.samplers`), the base and search against the Recipe and the
world (`validate`), and the checks across sections (distinct objectives, ASHA's metric, the
sampler's options). Metrics must be the world's (`orchestrator.metrics`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from orchestrator.metrics import default_world, metric_problem
from orchestrator.rundir import is_uri
from orchestrator.search.entries import SearchEntry
from orchestrator.search.samplers import SamplerSpec, sampler_problems
from orchestrator.spec_base import SpecModel, pydantic_problems, verbatim_error
from orchestrator.validate import check_base_and_search
from orchestrator.world_spec import WorldSpec, resolve_world
from orchestrator.yamlio import Problem, SpecError, line_of, read_yaml, show
from trainers.recipe import Recipe
from trainers.world import WorldInfo


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
        raise verbatim_error(problem)
    return name


class Objective(SpecModel):
    metric: str
    mode: Literal["max", "min"]
    reference: float | None = Field(
        None, description="hypervolume reference on this axis; null -> the teacher at the student's NFE"
    )

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str, info: ValidationInfo) -> str:
        return _check_metric(metric, _world_in(info))


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


class Confirm(SpecModel):
    """After the search: the best trials re-run full-length with new training seeds (orchestrator.confirm)."""

    top: int = Field(2, ge=1, description="trials to confirm: best by the scalar objective, else nearest the knee")
    seeds: int = Field(2, ge=2, description="new training seeds per trial (the recipe's seed + 1, + 2, ...)")


class Resources(SpecModel):
    """What one trial holds. cpu and gpu are the trial's totals, split evenly over its workers."""

    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, description="fractions share a GPU between trials")
    workers: int = Field(
        1, ge=1, description="> 1: data-parallel Ray Train workers per trial; the recipe's batch_size is split"
    )


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
        raise verbatim_error(f"expected knee, best, best:<metric> or trial:<id>, found {pick!r}")


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
    confirm: Confirm | None = Field(None, description="null: no confirmation stage")
    resources: Resources = Field(default_factory=Resources)
    tracking: Tracking = Field(default_factory=Tracking)
    storage: str | None = Field(
        None,
        min_length=1,
        description="where Ray Tune keeps the trials' checkpoints: a folder every node mounts, or a URI "
        "(file://, s3://, gs://); null -> the run folder",
    )
    promote: Promote = Field(default_factory=Promote)

    @field_validator("world", mode="before")
    @classmethod
    def _world_shorthand(cls, world: Any) -> Any:
        """`world: tiny` (a string) is short for `world: {name: tiny}`."""
        return {"name": world} if isinstance(world, str) else world

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, storage: str | None) -> str | None:
        problem = None if storage is None else storage_problem(storage)
        if problem:
            raise verbatim_error(problem)
        return storage

    @property
    def directions(self) -> list[str]:
        """Optuna study directions, one per objective."""
        return ["maximize" if o.mode == "max" else "minimize" for o in self.objectives]

    @property
    def base_recipe(self) -> Recipe:
        """The base as a Recipe (trials run `orchestrator.search.trial_recipe(spec.base, config)`)."""
        return Recipe.model_validate(self.base)


def storage_problem(storage: str) -> str | None:
    """Why Ray Tune could not keep an experiment on `storage` (None: it can): a URI must name a
    filesystem pyarrow resolves (as Tune does, with `pyarrow.fs.FileSystem.from_uri`), a path must not
    be a file. Nothing is created; an S3 URI without `?region=` costs pyarrow a region lookup."""
    if not is_uri(storage):
        return f"expected a folder or a URI, found the file {storage!r}" if Path(storage).expanduser().is_file() else None
    import pyarrow  # here, not at the top: only a URI needs pyarrow's filesystems
    import pyarrow.fs

    try:
        pyarrow.fs.FileSystem.from_uri(storage)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"expected a URI of a filesystem pyarrow resolves (file://, s3://, gs://, ...), found {storage!r} (pyarrow: {reason})"
    return None


# -- loading -------------------------------------------------------------------------------------


def load_spec(path: str | Path) -> SweepSpec:
    """Read, validate and resolve a sweep spec; raise SpecError listing every problem with file:line."""
    path = Path(path)
    root, data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(path, [Problem((), f"expected a mapping of spec sections, found {show(data)}", 1)])
    # The world first: every other section is checked against what it offers (no weights loaded).
    world, info, problems = resolve_world(data.get("world", "tiny"), path)
    try:
        spec: SweepSpec | None = SweepSpec.model_validate(data, context={"world": info})
    except ValidationError as exc:
        problems += pydantic_problems(exc, SweepSpec)
        spec = None
    # Base and search are checked against each other even when another section is broken,
    # so that one run of the loader reports everything.
    base, search_problems = check_base_and_search(data.get("base", {}), data.get("search"), info)
    problems += search_problems
    if spec is not None:
        spec, spec_problems = _resolve(spec, base, world or spec.world, info)
        problems += spec_problems
    if problems or spec is None:
        unique = dict.fromkeys(Problem(p.loc, p.message, p.line or line_of(root, p.loc)) for p in problems)
        raise SpecError(path, sorted(unique, key=lambda p: p.line or 0))
    return spec


def _resolve(
    spec: SweepSpec, base: dict[str, Any] | None, world: WorldSpec, info: WorldInfo | None
) -> tuple[SweepSpec, list[Problem]]:
    """Checks across the other sections; fills the defaults that depend on others (base mix, ASHA metric)."""
    problems = _objective_problems(spec.objectives)
    scheduler, scheduler_problems = _resolve_scheduler(spec, info)
    problems += scheduler_problems
    problems += sampler_problems(spec.sampler, spec.search, spec.budget.trials)
    problems += _worker_problems(spec, base)
    return spec.model_copy(
        update={"base": base if base is not None else spec.base, "scheduler": scheduler, "world": world}
    ), problems


def _worker_problems(spec: SweepSpec, base: dict[str, Any] | None) -> list[Problem]:
    """Each worker trains on an equal share of the batch: batch_size must split over resources.workers."""
    workers = spec.resources.workers
    batches = {(base or {}).get("batch_size", Recipe.model_fields["batch_size"].default)}
    entry = spec.search.get("batch_size")
    batches |= set(getattr(entry, "values", None) or [])  # choice: or grid: values
    uneven = sorted(b for b in batches if isinstance(b, int) and b % workers)
    if workers == 1 or not uneven:
        return []
    return [Problem(("resources", "workers"), f"expected a divisor of every batch_size, found {workers} (batch_size {uneven[0]})")]


def _objective_problems(objectives: list[Objective]) -> list[Problem]:
    seen: set[str] = set()
    problems = []
    for i, objective in enumerate(objectives):
        if objective.metric in seen:
            problems.append(
                Problem(("objectives", i, "metric"), f"expected distinct metrics, found {objective.metric!r} twice")
            )
        seen.add(objective.metric)
    return problems


def _resolve_scheduler(spec: SweepSpec, world: WorldInfo | None = None) -> tuple[SchedulerSpec | None, list[Problem]]:
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


HASH_IGNORES = ("promote", "tracking", "storage")
"""Sections that do not change what the trials compute: where they are tracked and kept, how promoted."""


def spec_hash(spec: SweepSpec) -> str:
    """Hash of the resolved spec without HASH_IGNORES: what the sweep's results depend on.

    Comments and key order in the YAML do not change it, and neither does editing the promotion
    defaults after a sweep, or tracking to another MLflow store (a --resume or a promotion is refused
    only when the trials would differ). Where the experiment is kept is sweep.json's to say.
    """
    data = resolved_dict(spec)
    for section in HASH_IGNORES:
        data.pop(section, None)
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
