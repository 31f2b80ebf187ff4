"""The World interface: everything a distillation run needs from its domain, and ``load_world``.

A world bundles prompt and edit pools (Arrow tables), a text encoder, the frozen teachers and a
judge that scores generated images. ``trainers.distill`` and ``trainers.evaluate`` only ever talk
to this interface; ``load_world`` is the one place that knows which implementations exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import pyarrow as pa
import torch

from trainers.teachers import Cond, TeacherSet
from trainers.text import TextEncoder


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


def load_world(name_or_path: str | Path = "tiny", **options) -> World:
    """Resolve a world by name: "tiny" is the embedded procedural world (``trainers.tinyworld``).

    A real-model world (diffusers checkpoints + a prompt manifest) is a folder path; none ships yet,
    so a path is refused with a clear message rather than half-loaded.
    """
    if str(name_or_path) == "tiny":
        from trainers.tinyworld.world import TinyWorld

        return TinyWorld(**options)
    raise ValueError(
        f"world {str(name_or_path)!r}: only the embedded world 'tiny' is available in this version "
        "(real-model worlds from a folder are not supported yet)"
    )
