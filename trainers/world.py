"""The World interface: everything a distillation run needs from its domain, and ``load_world``.

A world bundles prompt and edit pools (Arrow tables), a text encoder, the frozen teachers and a
judge that scores generated images. ``trainers.distill`` and ``trainers.evaluate`` only ever talk
to this interface; ``load_world`` is the one place that knows which implementations exist.

``world_info`` answers what a world *is* (categories, edit types, specialists, metrics) without
loading weights or building pools: the sweep spec is checked against it before anything starts.
This module stays import-light (no torch at import time) so the spec loader can use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: importing this module must not import torch
    import pyarrow as pa
    import torch

    from trainers.teachers import Cond, TeacherSet
    from trainers.text import TextEncoder

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
    def encoder(self) -> TextEncoder: ...

    def prompt_pool(self, split: str) -> pa.Table:
        """T2I prompts with ground truth; ``split`` is "train" (distillation) or "heldout" (evaluation)."""

    def edit_pool(self, split: str) -> pa.Table:
        """Edit items (instruction, source, target) with ground truth."""

    def t2i_cond(self, rows: Sequence[dict]) -> Cond:
        """Conditions for prompt-pool rows."""

    def edit_cond(self, rows: Sequence[dict], seeds: Sequence[int] | None = None) -> Cond:
        """Conditions for edit-pool rows (the source image rendered with ``seeds``, default the row's)."""

    def load_teachers(self) -> TeacherSet:
        """The frozen teachers: "base" plus specialists."""

    def score_t2i(
        self, images: torch.Tensor, rows: Sequence[dict], samples_per_prompt: int
    ) -> dict[str, float]:
        """T2I metrics of generated images (``samples_per_prompt`` per row, row-major)."""

    def score_edits(self, images: torch.Tensor, rows: Sequence[dict]) -> dict[str, float]:
        """Edit metrics of one generated image per edit row."""

    @classmethod
    def info(cls, **options: Any) -> WorldInfo:
        """The world's metadata for these options, without loading weights or building pools."""


def _world_class(name_or_path: str | Path) -> type:
    """The World implementation behind a name or path; ValueError when none can be resolved."""
    text = str(name_or_path)
    if text == "tiny":
        from trainers.tinyworld.world import TinyWorld

        return TinyWorld
    if not Path(text).exists():
        raise ValueError(
            f"world {text!r}: no such file or folder (a world is 'tiny' or a folder with a world.yaml)"
        )
    raise ValueError(
        f"world {text!r}: only the embedded world 'tiny' is available in this version "
        "(real-model worlds from a folder with a world.yaml are not supported yet)"
    )


def world_info(name_or_path: str | Path = "tiny", **options: Any) -> WorldInfo:
    """A world's metadata (categories, edit types, specialists, metrics) without loading it.

    Raises ValueError for a world that cannot be resolved or options it does not take.
    """
    cls = _world_class(name_or_path)
    info = cls.info(**options)
    if not isinstance(info, WorldInfo):
        raise TypeError(f"{cls.__name__}.info() returned {type(info).__name__}, expected WorldInfo")
    return info


def load_world(name_or_path: str | Path = "tiny", **options) -> World:
    """Resolve a world by name: "tiny" is the embedded procedural world (``trainers.tinyworld``).

    A real-model world (diffusers checkpoints + a prompt manifest) is a folder path; none ships yet,
    so a path is refused with a clear message rather than half-loaded.
    """
    return _world_class(name_or_path)(**options)
