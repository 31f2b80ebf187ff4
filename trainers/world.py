"""The World contract, the one registry of worlds, and the per-process world cache.

A world bundles prompt and edit pools (Arrow tables), a text encoder, the frozen teachers and a
judge that scores generated images. ``trainers.distill`` and ``trainers.evaluate`` only ever talk
to the :class:`World` protocol; :data:`WORLDS` is the one place that knows which implementations
exist (name -> ``"module:Class"``, imported on first use). A new world is one
:func:`register_world` line here and its own package.

- ``world_info(name, **options)`` answers what a world *is* (categories, edit types, specialists,
  metrics) without loading weights or building pools: the sweep spec is checked against it.
- ``load_world(name, **options)`` builds one.
- ``shared_world(name, options)`` is the process-wide world for (name, options), teachers loaded
  once: consecutive trials of a Ray worker, or a promotion's runs, find it warm.

This module stays import-light (no torch at import time) so the spec loader can use it.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    import pyarrow as pa
    import torch

    from trainers.cond import Cond
    from trainers.teachers import TeacherSet

GroupKind = Literal["category", "edit_type"]


@dataclass(frozen=True)
class WorldInfo:
    """What a world offers, known without loading weights or pools: what a sweep spec is checked against.

    ``metrics`` are the scalar metrics the world's judge reports, with the direction in which each
    improves; ``grouped`` names the metrics also reported per group (``t2i_score/<category>``,
    ``edit_score/<edit_type>``, same direction as the aggregate). ``specialists`` maps each
    specialist teacher to the categories it teaches; the teachers are ``base`` plus the specialists.
    """

    name: str
    categories: tuple[str, ...]
    edit_types: tuple[str, ...]
    specialists: Mapping[str, frozenset[str]]
    resolutions: tuple[int, ...]
    metrics: Mapping[str, Literal["max", "min"]]
    grouped: Mapping[str, GroupKind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.grouped) - set(self.metrics)
        if unknown:
            raise ValueError(f"world {self.name!r}: grouped metrics {sorted(unknown)} are not among its metrics")
        if "base" in self.specialists:
            raise ValueError(f"world {self.name!r}: 'base' is the base teacher, not a specialist")

    @property
    def teachers(self) -> tuple[str, ...]:
        """Every teacher name a schedule may use: "base" plus the specialists."""
        return ("base", *self.specialists)

    def groups(self, metric: str) -> tuple[str, ...]:
        """The group names of a grouped metric (categories or edit types); () for an ungrouped one."""
        kind = self.grouped.get(metric)
        if kind is None:
            return ()
        return self.categories if kind == "category" else self.edit_types

    def mode(self, metric: str) -> Literal["max", "min"] | None:
        """The direction in which `metric` (or `metric/<group>`) improves; None if the world does not report it."""
        head, slash, group = metric.partition("/")
        if head not in self.metrics or (slash and group not in self.groups(head)):
            return None
        return self.metrics[head]


@runtime_checkable
class World(Protocol):
    """A domain to distil in: pools, encoder, teachers, judge."""

    name: str
    resolution: int
    categories: tuple[str, ...]
    edit_types: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """What models generate, [C, H, W]: pixels (tiny world) or normalised VAE latents (a real world)."""

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Generated samples (``image_shape``) as images [B, 3, H, W] in [-1, 1], for judges and grids."""

    def edit_sources(self, rows: Sequence[dict]) -> torch.Tensor:
        """The source images of edit-pool rows [B, 3, H, W] in [-1, 1] (shown beside the edits in grids)."""

    def prompt_pool(self, split: str) -> pa.Table:
        """T2I prompts with ground truth; ``split`` is "train" (distillation) or "heldout" (evaluation)."""

    def edit_pool(self, split: str) -> pa.Table:
        """Edit items (instruction, source, target) with ground truth."""

    def t2i_cond(self, rows: Sequence[dict]) -> Cond:
        """Conditions for prompt-pool rows."""

    def edit_cond(self, rows: Sequence[dict], seeds: Sequence[int] | None = None) -> Cond:
        """Conditions for edit-pool rows (the source image rendered with ``seeds``, default the row's)."""

    def prepare(self, progress: bool = True) -> dict[str, int]:
        """Compute once, before any trial, what trials only read (a real world's text-condition cache)."""

    def load_teachers(self) -> TeacherSet:
        """The frozen teachers: "base" plus specialists."""

    def default_model_mode(self) -> Literal["full", "adapter"]:
        """How a run holds student and fake score when the recipe does not say (``Recipe.model_mode``):
        full copies of the base (small models) or LoRA adapters on one frozen base (real sizes)."""

    def score_t2i(
        self, images: torch.Tensor, rows: Sequence[dict], samples_per_prompt: int
    ) -> dict[str, float]:
        """T2I metrics of generated images (``samples_per_prompt`` per row, row-major)."""

    def score_edits(self, images: torch.Tensor, rows: Sequence[dict]) -> dict[str, float]:
        """Edit metrics of one generated image per edit row."""

    @classmethod
    def info(cls, **options: Any) -> WorldInfo:
        """The world's metadata for these options, without loading weights or building pools."""


@dataclass(frozen=True)
class WorldEntry:
    """One registered world: its class, named as ``"module:Class"`` so that nothing heavy is imported early."""

    name: str
    target: str
    description: str

    def load_class(self) -> type[World]:
        """Import the world's module and return its class."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


WORLDS: dict[str, WorldEntry] = {}
"""The registry: world name -> entry. Spec files and ``--world`` name worlds by these keys."""


def register_world(name: str, target: str, description: str) -> WorldEntry:
    """Add a world to :data:`WORLDS`; a name is registered once."""
    if name in WORLDS:
        raise ValueError(f"world {name!r} is already registered ({WORLDS[name].target})")
    WORLDS[name] = WorldEntry(name, target, description)
    return WORLDS[name]


register_world("tiny", "trainers.tinyworld.world:TinyWorld", "the embedded procedural 16×16 world (DESIGN §5)")


WORLD_KINDS: dict[str, str] = {"diffusers": "trainers.worlds.diffusers.world:DiffusersWorld"}
"""World folders: the ``kind:`` of a world.yaml -> its implementation (a real-model world, docs/worlds.md)."""
WORLD_FILE = "world.yaml"


def world_file(path: str | Path) -> Path:
    """The world.yaml of a world path: the file itself, or the one in the folder."""
    path = Path(path)
    return path / WORLD_FILE if path.is_dir() else path


def _kind_of(file: Path) -> str:
    """The ``kind:`` of a world file, read without validating the rest (the world's reader does that).

    An unreadable file or an unknown kind goes to the first kind's reader, whose file:line errors say why.
    """
    from trainers.yaml_dialect import load_yaml  # import-light module: PyYAML only

    try:
        data = load_yaml(file.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 -- reported with its line by the world's own reader
        data = None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if kind in WORLD_KINDS else next(iter(WORLD_KINDS))


def _resolve(name_or_path: str | Path) -> tuple[type[World], tuple[Any, ...]]:
    """The World implementation behind a name or path, and the leading constructor arguments (a path's file)."""
    text = str(name_or_path)
    if text in WORLDS:
        return WORLDS[text].load_class(), ()
    names = ", ".join(repr(n) for n in WORLDS)
    file = world_file(text)
    if not file.is_file():
        what = "no world.yaml in that folder" if Path(text).is_dir() else "no such file or folder"
        raise ValueError(f"world {text!r}: {what} (a world is {names} or a folder with a {WORLD_FILE})")
    module, _, attr = WORLD_KINDS[_kind_of(file)].partition(":")
    return getattr(importlib.import_module(module), attr), (file,)


def world_info(name_or_path: str | Path = "tiny", **options: Any) -> WorldInfo:
    """A world's metadata (categories, edit types, specialists, metrics) without loading it.

    Raises ValueError for a world that cannot be resolved or options it does not take (a world
    file's problems: ``trainers.worlds.diffusers.config.WorldFileError``, with file:line).
    """
    cls, args = _resolve(name_or_path)
    info = cls.info(*args, **options)
    if not isinstance(info, WorldInfo):
        raise TypeError(f"{cls.__name__}.info() returned {type(info).__name__}, expected WorldInfo")
    return info


def load_world(name_or_path: str | Path = "tiny", **options: Any) -> World:
    """Build a world: a registered name ("tiny": ``trainers.tinyworld``) or a world folder / world.yaml
    (a real-model world, ``trainers.worlds.diffusers``)."""
    cls, args = _resolve(name_or_path)
    return cls(*args, **options)


# --- the per-process cache -------------------------------------------------------------------------


class SharedWorld:
    """A world whose teachers are loaded once: ``distill`` asks for them on every call."""

    def __init__(self, world: World):
        self._world = world
        self._teachers: TeacherSet | None = None

    def load_teachers(self) -> TeacherSet:
        # Teachers are frozen and never moved off their device by distill, so runs can share them.
        if self._teachers is None:
            self._teachers = self._world.load_teachers()
        return self._teachers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._world, name)


_SHARED: dict[str, SharedWorld] = {}  # per process, keyed by the world's name and options


def shared_world(name: str, options: Mapping[str, Any]) -> World:
    """The process-wide world for (name, options), built on first use; options are compared by content."""
    key = json.dumps([name, dict(options)], sort_keys=True)
    if key not in _SHARED:
        _SHARED[key] = SharedWorld(load_world(name, **options))
    return _SHARED[key]  # type: ignore[return-value]  # a SharedWorld answers the World protocol by delegation
