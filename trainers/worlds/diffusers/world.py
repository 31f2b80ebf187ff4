"""DiffusersWorld: a real-model world from a folder of diffusers Qwen-Image checkpoints (docs/worlds.md).

The same World contract as the tiny world, so the spec language, ``trainers.distill`` and the sweep run
unchanged; what differs is hidden here:

- models work on normalised VAE latents (``latent.py``): ``image_shape`` is the latent shape and
  ``to_pixels`` decodes with the pipeline's VAE, for the judges and the sample grid;
- conditions come from the text cache that ``prepare`` fills once with the pipelines' own text encoders
  and templates (``text.py``); a trial never loads a text encoder;
- teachers are the checkpoints' transformers: ``base`` is the ``student:`` pipeline's transformer, the
  other pipeline's transformer is an implicit specialist (``edit`` on edit items when the base is
  Qwen-Image; ``t2i`` on the T2I categories when it is Qwen-Image-Edit), plus the file's specialists;
- the judges are CLIP (and the VLM judge when given), ``judge.py``.

Loading is component by component with ``from_pretrained`` from the folder's subfolders, local files
only; fp32 on CPU, bf16 on a GPU machine (``dtype`` option).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from trainers.cond import EDIT, Cond
from trainers.teachers import Teacher, TeacherSet
from trainers.world import WorldInfo

from .config import WorldConfig, read_world_config, world_info_of

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
VAE_SCALE = 8  # AutoencoderKLQwenImage: 2 ** len(temperal_downsample) spatial downsampling


def _implicit_specialist(config: WorldConfig) -> tuple[str, frozenset[str]] | None:
    """The other pipeline's transformer as a specialist: what it teaches that the base does not."""
    if config.edit_pipeline is None:
        return None
    if config.student == "pipeline":
        return "edit", frozenset({EDIT})
    return "t2i", frozenset(config.categories)


def default_dtype() -> torch.dtype:
    """bf16 where a GPU runs the models (Qwen-Image's own precision), fp32 on CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


class DiffusersWorld:
    """A world folder: Qwen-Image (+ Qwen-Image-Edit) pipelines, specialists, manifests, judges."""

    def __init__(self, path: str | Path, dtype: Literal["auto", "float32", "bfloat16"] = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every folder is local: never reach for a hub
        self.config = read_world_config(path)
        self.name = str(self.config.file)
        self.resolution = self.config.resolution
        self.categories = self.config.categories
        self.edit_types = self.config.edit_types
        self.dtype = default_dtype() if dtype == "auto" else DTYPES[dtype]
        self._pools: dict[tuple[str, str], pa.Table] = {}
        self._source_latents: dict[str, torch.Tensor] = {}

    @classmethod
    def info(cls, path: str | Path, **options: Any) -> WorldInfo:
        """The world's metadata from world.yaml and the manifests; no weights are read."""
        unknown = sorted(set(options) - {"dtype"})
        if unknown:
            raise ValueError(f"world {str(path)!r}: unknown option(s) {', '.join(unknown)}; expected dtype")
        config = read_world_config(path)
        info = world_info_of(config)
        implicit = _implicit_specialist(config)
        if implicit is None:
            return info
        if implicit[0] in info.specialists:
            raise ValueError(f"world {info.name!r}: specialist name {implicit[0]!r} is taken by the "
                             f"{'edit_pipeline' if implicit[0] == 'edit' else 'pipeline'}'s transformer; rename it")
        specialists = dict(info.specialists) | {implicit[0]: implicit[1]}
        return WorldInfo(info.name, info.categories, info.edit_types, specialists, info.resolutions,
                         info.metrics, info.grouped)

    # -- what models generate --------------------------------------------------------------------

    @cached_property
    def _vae_config(self) -> dict:
        return json.loads((self.config.pipeline / "vae" / "config.json").read_text())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Normalised VAE latents [z_dim, H/8, W/8], which the transformers see packed 2×2."""
        side = self.resolution // VAE_SCALE
        return (int(self._vae_config["z_dim"]), side, side)

    @cached_property
    def codec(self):
        """The pipeline's VAE (encode sources, decode samples), on CPU in fp32: it runs outside the DMD loop."""
        from .latent import LatentCodec

        return LatentCodec.from_pretrained(self.config.pipeline / "vae")

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(x.float().cpu()).clamp(-1, 1)

    def edit_sources(self, rows: Sequence[dict]) -> torch.Tensor:
        return torch.stack([self._source_pixels(r["source"]) for r in rows])

    def default_model_mode(self) -> Literal["full", "adapter"]:
        """Real sizes: student and fake score are LoRA adapters on one frozen base (memory for 20B models)."""
        return "adapter"

    # -- pools and conditions ---------------------------------------------------------------------

    def prompt_pool(self, split: str) -> pa.Table:
        key = ("prompt", split)
        if key not in self._pools:
            table = pq.read_table(self.config.prompts)
            self._pools[key] = table.filter(pa.compute.equal(table["split"], split)).select(["prompt", "category"])
        return self._pools[key]

    def edit_pool(self, split: str) -> pa.Table:
        key = ("edit", split)
        if key not in self._pools:
            if self.config.edits is None:  # a T2I-only world
                schema = {"instruction": pa.string(), "edit_type": pa.string(), "category": pa.string(),
                          "source": pa.string()}
                self._pools[key] = pa.table({k: pa.array([], t) for k, t in schema.items()})
            else:
                table = pq.read_table(self.config.edits)
                table = table.filter(pa.compute.equal(table["split"], split))
                if "category" not in table.column_names:
                    table = table.append_column("category", pa.array([EDIT] * len(table), pa.string()))
                sources = [str(self.config.root / s) for s in table["source"].to_pylist()]
                table = table.set_column(table.column_names.index("source"), "source", pa.array(sources))
                self._pools[key] = table.select(["instruction", "edit_type", "category", "source"])
        return self._pools[key]

    @cached_property
    def conditions(self):
        """Encoded texts from the warm cache; a missing entry is an error that names ``prepare``."""
        from .text import CachedConditions

        return CachedConditions.for_world(self.config, allow_encode=False)

    def t2i_cond(self, rows: Sequence[dict]) -> Cond:
        text, mask = self.conditions.t2i([r["prompt"] for r in rows])
        null_text, null_mask = self.conditions.t2i_null(len(rows))
        return Cond(text, mask, null_text, null_mask, tuple(r["category"] for r in rows))

    def edit_cond(self, rows: Sequence[dict], seeds: Sequence[int] | None = None) -> Cond:
        # Real sources are fixed images: ``seeds`` (the tiny world's render jitter) has nothing to vary.
        sources = [r["source"] for r in rows]
        text, mask = self.conditions.edit([(r["instruction"], s) for r, s in zip(rows, sources, strict=True)])
        null_text, null_mask = self.conditions.edit_null(sources)  # the empty instruction WITH its source
        return Cond(text, mask, null_text, null_mask, (EDIT,) * len(rows),
                    source=torch.stack([self._source_latent(s) for s in sources]),
                    is_edit=torch.ones(len(rows), dtype=torch.bool))

    def _source_pixels(self, source: str) -> torch.Tensor:
        """A source image [3, H, W] in [-1, 1] at the world's resolution."""
        image = Image.open(source).convert("RGB").resize((self.resolution, self.resolution), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 127.5 - 1

    def _source_latent(self, source: str) -> torch.Tensor:
        """The normalised VAE latent of a source image, encoded once per process (the VAE is deterministic here)."""
        if source not in self._source_latents:
            self._source_latents[source] = self.codec.encode(self._source_pixels(source)[None])[0]
        return self._source_latents[source]

    def prepare(self, progress: bool = True) -> dict[str, int]:
        """Encode every manifest text (and each edit's empty instruction with its source) into the cache."""
        from .text import prepare_world

        return prepare_world(self.config, progress=progress)

    # -- models -----------------------------------------------------------------------------------

    def _transformer(self, folder: Path):
        from .latent import QwenLatentModel

        model = QwenLatentModel.from_pretrained(folder, torch_dtype=self.dtype)
        return model.requires_grad_(False).eval()

    def load_teachers(self) -> TeacherSet:
        cfg = self.config
        base_pipeline = cfg.pipeline if cfg.student == "pipeline" else cfg.edit_pipeline
        base = self._transformer(base_pipeline / "transformer")
        teachers = [Teacher("base", base)]
        implicit = _implicit_specialist(cfg)
        if implicit is not None:
            other = cfg.edit_pipeline if cfg.student == "pipeline" else cfg.pipeline
            teachers.append(Teacher(implicit[0], self._transformer(other / "transformer"), implicit[1]))
        for spec in cfg.specialists.values():
            if spec.transformer is not None:
                model = self._transformer(spec.transformer)
            else:  # a LoRA on the base transformer, merged into a frozen copy of it
                model = _merged_lora(base, spec.lora)
            teachers.append(Teacher(spec.name, model, spec.categories))
        return TeacherSet.of(*teachers)

    # -- judges -----------------------------------------------------------------------------------

    @cached_property
    def judges(self):
        from .judge import ClipJudge, VlmJudge

        clip = ClipJudge.from_pretrained(self.config.clip)
        vlm = VlmJudge.from_pretrained(self.config.vlm) if self.config.vlm is not None else None
        return clip, vlm

    def score_t2i(self, images: torch.Tensor, rows: Sequence[dict], samples_per_prompt: int) -> dict[str, float]:
        from .judge import score_t2i

        clip, vlm = self.judges
        prompts = [r["prompt"] for r in rows for _ in range(samples_per_prompt)]
        categories = [r["category"] for r in rows for _ in range(samples_per_prompt)]
        return score_t2i(clip, vlm, images, prompts, categories, samples_per_prompt)

    def score_edits(self, images: torch.Tensor, rows: Sequence[dict]) -> dict[str, float]:
        from .judge import score_edits

        if not rows:
            return {}
        clip, vlm = self.judges
        return score_edits(clip, vlm, self.edit_sources(rows), images, [r["instruction"] for r in rows],
                           [r["edit_type"] for r in rows])


def _merged_lora(base, lora: Path):
    """A frozen copy of the base transformer with a peft LoRA folder merged in (a LoRA specialist)."""
    import copy

    from peft import PeftModel

    from .latent import QwenLatentModel

    merged = PeftModel.from_pretrained(copy.deepcopy(base.transformer), str(lora)).merge_and_unload()
    return QwenLatentModel(merged).requires_grad_(False).eval()
