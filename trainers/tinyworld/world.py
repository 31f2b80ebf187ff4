"""TinyWorld: the embedded procedural world behind the ``World`` interface (DESIGN §5).

Pools are built deterministically from a seed, so every process (every Ray worker, every trial)
sees the same prompts; prompt embeddings come from the text encoder's on-disk cache after the
first encoding on a machine. Teachers and judge load from the safetensors checkpoints shipped in
``checkpoints/`` — loading never needs the pretraining code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from trainers.models import FlowModel
from trainers.teachers import EDIT, Cond, Teacher, TeacherSet
from trainers.text import TextEncoder

from . import metrics
from .edits import EDIT_TYPES, build_edit_pool
from .judge import Judge, load_judge
from .prompts import build_prompt_pool, sample_images
from .render import ATTRIBUTES, CATEGORIES, render_batch

CHECKPOINTS = Path(__file__).parent / "checkpoints"
POOL_SEED = 1234  # fixed: pools are part of the world's definition, not of a trial

# Specialists shipped with the tiny world: name -> the categories it is a teacher for.
SPECIALISTS: dict[str, frozenset[str]] = {"text": frozenset({"text"})}


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
            (EDIT,) * len(rows),
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
        path = self.checkpoints / name
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"teacher {name!r}: no checkpoint in {path}; rebuild with `python -m trainers.tinyworld.pretrain`"
            )
        return FlowModel.from_pretrained(path, torch_dtype=torch.float32).eval().requires_grad_(False)

    def load_teachers(self) -> TeacherSet:
        teachers = [Teacher("base", self.load_teacher_model("base"))]
        teachers += [Teacher(n, self.load_teacher_model(n), cats) for n, cats in SPECIALISTS.items()]
        return TeacherSet.of(*teachers)

    def card(self, name: str) -> dict:
        """The model card of a shipped checkpoint (teacher or judge)."""
        return json.loads((self.checkpoints / name / "card.json").read_text())

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
