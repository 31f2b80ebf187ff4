"""TinyWorld: the embedded procedural world behind the ``World`` interface (DESIGN §5).

Pools are built deterministically from a seed, so every process (every Ray worker, every trial)
sees the same prompts; prompt embeddings come from the text encoder's on-disk cache after the
first encoding on a machine. Teachers and judge load from the safetensors checkpoints shipped in
``checkpoints/`` — loading never needs the pretraining code. ``TinyWorld.info()`` describes the
world (categories, edit types, specialists, metrics) without loading any of it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import torch

from trainers.checkpoint import load_card, load_model
from trainers.cond import Cond
from trainers.teachers import Teacher, TeacherSet
from trainers.text import TextEncoder
from trainers.world import GroupKind, WorldInfo

from . import metrics
from .edits import EDIT_TYPES, build_edit_pool
from .judge import Judge, load_judge
from .prompts import build_prompt_pool, sample_images
from .render import ATTRIBUTES, CATEGORIES, render_batch

if TYPE_CHECKING:  # trainers.models pulls in diffusers: imported when a teacher is loaded
    from trainers.models import FlowModel

CHECKPOINTS = Path(__file__).parent / "checkpoints"
POOL_SEED = 1234  # fixed: pools are part of the world's definition, not of a trial

# Specialists shipped with the tiny world: name -> the categories it is a teacher for.
SPECIALISTS: dict[str, frozenset[str]] = {"text": frozenset({"text"})}
RESOLUTIONS: tuple[int, ...] = (16, 32)  # image sizes the renderer and the shipped models support

# What the judge reports (metrics.evaluate): metric -> the direction in which it improves, and the
# metrics also reported per group as `<metric>/<category>` or `<metric>/<edit_type>`.
METRICS: dict[str, Literal["max", "min"]] = {
    "score": "max",
    "t2i_score": "max",
    "edit_score": "max",
    "diversity": "max",
    "fd": "min",
    "adherence": "max",
    "purity": "max",
}
GROUPED_METRICS: dict[str, GroupKind] = {"t2i_score": "category", "edit_score": "edit_type"}


def _own(category: str, struct: dict) -> dict[str, str]:
    return {a: struct[a] for a in ATTRIBUTES[category]}


class TinyWorld:
    """The procedural 16×16 world: pools, encoder, teachers, judge and metrics."""

    name = "tiny"
    categories: tuple[str, ...] = CATEGORIES
    edit_types: tuple[str, ...] = EDIT_TYPES

    def __init__(
        self,
        resolution: int = 16,
        checkpoints: str | Path = CHECKPOINTS,
        train_prompts: int = 3000,
        train_edits: int = 1536,
        heldout_prompts: int = 768,
        heldout_edits: int = 1536,
        encoder: TextEncoder | None = None,
    ):
        self.resolution = resolution
        self.checkpoints = Path(checkpoints)
        self._sizes = {
            ("prompt", "train"): train_prompts,
            ("prompt", "heldout"): heldout_prompts,
            ("edit", "train"): train_edits,
            ("edit", "heldout"): heldout_edits,
        }
        self._pools: dict[tuple[str, str], pa.Table] = {}
        self._encoder = encoder

    @classmethod
    def info(cls, **options: Any) -> WorldInfo:
        """The tiny world's metadata for these constructor options; nothing is loaded or built."""
        allowed = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(
                f"world 'tiny': unknown option(s) {', '.join(unknown)}; expected some of {', '.join(allowed)}"
            )
        resolution = options.get("resolution", 16)
        if resolution not in RESOLUTIONS:
            raise ValueError(
                f"world 'tiny': expected a resolution in {list(RESOLUTIONS)}, found {resolution!r}"
            )
        return WorldInfo(
            name=cls.name,
            categories=tuple(cls.categories),
            edit_types=tuple(cls.edit_types),
            specialists=dict(SPECIALISTS),
            resolutions=RESOLUTIONS,
            metrics=dict(METRICS),
            grouped=dict(GROUPED_METRICS),
        )

    # -- what models generate ---------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The tiny world's models work in pixel space."""
        return (3, self.resolution, self.resolution)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Samples are pixels already; the judge sees them in the valid range."""
        return x.clamp(-1, 1)

    def edit_sources(self, rows: Sequence[dict]) -> torch.Tensor:
        return self.render_edits(rows, "source")

    def default_model_mode(self) -> Literal["full", "adapter"]:
        """2.5M-parameter teachers: full copies cost nothing and keep the shipped results reproducible."""
        return "full"

    def prepare(self, progress: bool = True) -> dict[str, int]:
        """Nothing to do ahead: pools are procedural and the encoder caches its own embeddings."""
        return {}

    # -- pools and conditions ---------------------------------------------------------------------

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = TextEncoder()
        return self._encoder

    def prompt_pool(self, split: str) -> pa.Table:
        key = ("prompt", split)
        if key not in self._pools:
            n = self._sizes[key] - self._sizes[key] % len(CATEGORIES)
            self._pools[key] = build_prompt_pool(n, POOL_SEED, split)
        return self._pools[key]

    def edit_pool(self, split: str) -> pa.Table:
        key = ("edit", split)
        if key not in self._pools:
            self._pools[key] = build_edit_pool(self._sizes[key], POOL_SEED, split)
        return self._pools[key]

    def _null(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        emb, mask = self.encoder.encode([""])
        return emb.expand(n, -1, -1), mask.expand(n, -1)

    def t2i_cond(self, rows: Sequence[dict]) -> Cond:
        text, mask = self.encoder.encode([r["prompt"] for r in rows])
        null_text, null_mask = self._null(len(rows))
        return Cond(text, mask, null_text, null_mask, tuple(r["category"] for r in rows))

    def edit_cond(self, rows: Sequence[dict], seeds: Sequence[int] | None = None) -> Cond:
        text, mask = self.encoder.encode([r["instruction"] for r in rows])
        null_text, null_mask = self._null(len(rows))
        source = self.render_edits(rows, "source", seeds)
        return Cond(
            text,
            mask,
            null_text,
            null_mask,
            tuple(r["category"] for r in rows),  # the source image's: a glyph edit is a text item
            source=source,
            is_edit=torch.ones(len(rows), dtype=torch.bool),
        )

    # -- ground truth ----------------------------------------------------------------------------

    def render_edits(
        self, rows: Sequence[dict], which: str, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Source or target images of edit rows (same seed for both: only the edit differs)."""
        seeds = [r["image_seed"] for r in rows] if seeds is None else seeds
        attrs = [_own(r["category"], r[which]) for r in rows]
        return render_batch([r["category"] for r in rows], attrs, seeds, self.resolution)

    def real_t2i(self, rows: Sequence[dict], seed: int, samples_per_prompt: int = 1) -> torch.Tensor:
        """Data samples for prompt rows: mentioned attributes fixed, open ones redrawn (multimodal)."""
        images, _ = sample_images(rows, samples_per_prompt, seed, self.resolution)
        return images

    # -- models -----------------------------------------------------------------------------------

    def load_teacher_model(self, name: str) -> FlowModel:
        """A shipped teacher (diffusers folder) in float32, frozen."""
        from trainers.models import FlowModel

        path = self.checkpoints / name
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"teacher {name!r}: no checkpoint in {path}; rebuild with `python -m trainers.tinyworld.pretrain`"
            )
        return load_model(FlowModel, path, frozen=True)

    def load_teachers(self) -> TeacherSet:
        teachers = [Teacher("base", self.load_teacher_model("base"))]
        teachers += [Teacher(n, self.load_teacher_model(n), cats) for n, cats in SPECIALISTS.items()]
        return TeacherSet.of(*teachers)

    def card(self, name: str) -> dict:
        """The model card of a shipped checkpoint (teacher or judge)."""
        return load_card(self.checkpoints / name)

    @cached_property
    def judge(self) -> Judge:
        return load_judge(self.checkpoints / "judge")

    # -- metrics ----------------------------------------------------------------------------------

    def score_t2i(
        self, images: torch.Tensor, rows: Sequence[dict], samples_per_prompt: int
    ) -> dict[str, float]:
        return metrics.evaluate_t2i(images, rows, self.judge, samples_per_prompt)

    def score_edits(self, images: torch.Tensor, rows: Sequence[dict]) -> dict[str, float]:
        return metrics.evaluate_edits(images, rows, self.judge)


def seeds_from(rng: np.random.Generator, n: int) -> list[int]:
    """Fresh render seeds (training draws new jitter every time an item is used)."""
    return [int(s) for s in rng.integers(2**62, size=n)]
