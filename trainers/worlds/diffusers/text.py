"""Qwen-Image text conditions, encoded once per world with the pipelines' own text encoder and templates.

A Qwen-Image condition is the last hidden state of a Qwen2.5-VL-7B (16 GB) over a templated prompt. A
sweep draws the same manifest texts in every trial, so ``prepare`` encodes each of them once into a
:class:`TextCache` folder and trials read it through :class:`CachedConditions`, which never loads the text
encoder unless told it may (``allow_encode``); ``QwenPromptEncoder.loads`` counts the loads.

Encoding (:class:`QwenPromptEncoder`) is diffusers' ``_get_qwen_prompt_embeds``, step for step:

* T2I (``QwenImagePipeline``): ``prompt_template_encode.format(prompt)``, tokenized with padding and
  truncation to ``tokenizer_max_length + drop_idx``;
* edit (``QwenImageEditPipeline``): the edit template holds ``<|vision_start|><|image_pad|><|vision_end|>``
  before the instruction. The source image is resized as the pipeline's ``__call__`` does before it
  encodes the prompt (``calculate_dimensions(1024 * 1024, w / h)``, ``VaeImageProcessor.resize``; the area
  is ``vl_area``, a world's ``edit_vision_area``, smaller only for small test worlds), then
  turned into ``pixel_values`` / ``image_grid_thw`` by the checkpoint's ``Qwen2VLImageProcessor`` and
  each ``<|image_pad|>`` expanded into ``grid.prod() // merge_size**2`` tokens. That expansion is what
  ``Qwen2VLProcessor`` does; it is done here by hand because that processor cannot be built without
  torchvision (its video processor needs it);
* both: last hidden state, the attention-masked tokens of each row, the template's first ``drop_idx``
  tokens dropped, rows zero-padded to the batch's longest with a long mask (1 = token).

The templates are read from pipeline objects built with no components (their ``__init__`` sets them and
needs no weights), so a diffusers release that changes them changes the cache keys too. ``drop_idx`` is
computed from the checkpoint's tokenizer instead of diffusers' ``prompt_template_encode_start_idx``
(34 / 64, counted in the real Qwen2 tokenizer): see :class:`PromptTemplate`.

Cache keys are sha256 of (cache format, encoder identity, template identity, text, source image sha256).
The encoder identity hashes the contents of ``text_encoder/``, ``tokenizer/`` and (edits) ``processor/``;
files of 16 MiB and more are hashed once per (path, size, mtime) and remembered in the cache folder, and a
Hugging Face cache blob is named by its sha256 already, so a warm trial only stats the weights.

Standalone: ``python -m trainers.worlds.diffusers.text --pipeline DIR [--edit-pipeline DIR] --prompts FILE
[--edits FILE] --cache DIR`` (``--help``); a world's own ``prepare`` is :func:`prepare_world`.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save_file

T2I = "t2i"
EDIT = "edit"
PIPELINE_KINDS = {"QwenImagePipeline": T2I, "QwenImageEditPipeline": EDIT}
"""model_index.json ``_class_name`` -> the kind of texts its pipeline encodes."""

VISION_START = "<|vision_start|>"
IMAGE_PAD = "<|image_pad|>"
EDIT_VL_AREA = 1024 * 1024
"""QwenImageEditPipeline.__call__ resizes the source to about this many pixels before encoding the prompt
(``calculate_dimensions(1024 * 1024, ratio)``: a literal in ``__call__``, not readable from an object).
The default of every ``vl_area`` here; a smaller one (fewer image tokens) is for small test worlds only:
a real checkpoint's conditions differ from the pipeline's with it."""

CACHE_FORMAT = "qwen-text-cache/1"
"""Part of every key and every shard's metadata: a change of layout or key recipe starts a new cache."""

BATCH_SIZE = 8  # texts per encoder forward in `prepare`: a 7B at ~1.4k image tokens per edit fits a GPU
_SHARD_BYTES = 256 << 20  # `prepare` commits a shard at least this often: a crash loses < 256 MiB of work
_MEMO_MIN_BYTES = 16 << 20  # files this large are hashed once per (path, size, mtime), smaller ones always
_HASH_MEMO = "file-hashes.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")


# -- what the pipelines decide -----------------------------------------------------------------------


@cache
def _pipeline_stub(kind: str) -> Any:
    """A pipeline with no components: its ``__init__`` sets the templates (and the VL resize) read here."""
    from diffusers import QwenImageEditPipeline, QwenImagePipeline

    if kind == T2I:
        return QwenImagePipeline(
            scheduler=None, vae=None, text_encoder=None, tokenizer=None, transformer=None
        )
    return QwenImageEditPipeline(
        scheduler=None, vae=None, text_encoder=None, tokenizer=None, processor=None, transformer=None
    )


def pipeline_kind(folder: str | Path) -> str:
    """``t2i`` or ``edit``, from the pipeline folder's ``model_index.json`` (``_class_name``)."""
    index = Path(folder) / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{index}: not found; expected a diffusers pipeline folder (save_pretrained)")
    name = json.loads(index.read_text()).get("_class_name")
    if name not in PIPELINE_KINDS:
        raise ValueError(f"{index}: _class_name {name!r} is not one of {', '.join(PIPELINE_KINDS)}")
    return PIPELINE_KINDS[name]


def t2i_max_sequence_length() -> int:
    """The default ``max_sequence_length`` of ``QwenImagePipeline.__call__`` (512): T2I rows are cut to it."""
    from diffusers import QwenImagePipeline

    return int(inspect.signature(QwenImagePipeline.__call__).parameters["max_sequence_length"].default)


def _vl_area(vl_area: int | None) -> int:
    """``vl_area`` checked; None is the pipeline's :data:`EDIT_VL_AREA`."""
    if vl_area is None:
        return EDIT_VL_AREA
    if isinstance(vl_area, bool) or not isinstance(vl_area, int) or vl_area <= 0:
        raise ValueError(f"vl_area: expected a positive number of pixels, found {vl_area!r}")
    return vl_area


@dataclass(frozen=True)
class PromptTemplate:
    """A pipeline's prompt template and how many of its leading tokens the condition drops.

    diffusers hard-codes ``prompt_template_encode_start_idx`` (34 T2I, 64 edit), the token count of the
    template's prefix in the real Qwen2 tokenizer (checked against it when this was written); here it is
    counted with the checkpoint's own tokenizer, so another tokenizer cuts at the same place:

    * T2I drops everything before the prompt: the system message and ``<|im_start|>user\\n``. The
      condition is the prompt's tokens plus the template's tail ``<|im_end|>\\n<|im_start|>assistant\\n``.
    * edit drops everything before ``<|vision_start|>``: the condition is ``<|vision_start|>``, the image's
      tokens, ``<|vision_end|>``, the instruction and the same tail.

    The count is fixed per template, as in diffusers; :meth:`of_pipeline` checks the tokenizer does not
    merge the prefix's last token with what follows (then the count would cut mid-token).
    """

    kind: str  # "t2i" | "edit"
    template: str  # the pipeline's prompt_template_encode, with "{}" for the text
    drop_idx: int  # leading tokens dropped from every row (the template prefix's token count)
    max_length: int | None  # T2I: tokenizer truncation (tokenizer_max_length + drop_idx); edit: none
    vl_area: int | None  # edit: pixels the source is resized to before the vision tower; T2I: None
    diffusers_drop_idx: int  # the pipeline's hard-coded prompt_template_encode_start_idx (for reference)

    @classmethod
    def of_pipeline(cls, kind: str, tokenizer: Any, vl_area: int | None = None) -> PromptTemplate:
        """The template of the ``kind`` pipeline class, with ``drop_idx`` counted by ``tokenizer``.

        ``vl_area``: the pixels an edit's source is resized to (None: :data:`EDIT_VL_AREA`, the
        pipeline's); T2I templates have none, so it is ignored for them.
        """
        vl_area = _vl_area(vl_area)
        stub = _pipeline_stub(kind)
        template = stub.prompt_template_encode
        marker = "{}" if kind == T2I else VISION_START
        if marker not in template or template.count("{}") != 1:
            raise ValueError(f"{type(stub).__name__}.prompt_template_encode has no {marker!r}: {template!r}")
        prefix = template[: template.index(marker)]
        prefix_ids = tokenizer(prefix)["input_ids"]
        drop = len(prefix_ids)
        sample = tokenizer(template.format("a"))["input_ids"]
        if sample[:drop] != prefix_ids:
            raise ValueError(
                f"the tokenizer merges the end of {type(stub).__name__}'s template prefix with what follows, "
                f"so no token count drops exactly the prefix {prefix[-40:]!r}"
            )
        max_length = stub.tokenizer_max_length + drop if kind == T2I else None
        return cls(
            kind,
            template,
            drop,
            max_length,
            vl_area if kind == EDIT else None,
            int(stub.prompt_template_encode_start_idx),
        )

    @property
    def identity(self) -> str:
        """sha256 of everything that shapes a row besides the encoder and the text."""
        fields = [self.kind, self.template, self.drop_idx, self.max_length, self.vl_area]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


# -- identities and keys -------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _HashMemo:
    """sha256 of large files, remembered per (real path, size, mtime_ns) in a JSON file (if writable)."""

    def __init__(self, file: Path | None):
        self.file = file
        self._memo: dict[str, dict] = {}
        if file is not None and file.is_file():
            try:
                self._memo = json.loads(file.read_text())
            except (OSError, ValueError):
                self._memo = {}  # a memo is only a shortcut: a bad one costs a rehash

    def sha256(self, path: Path) -> str:
        real = Path(os.path.realpath(path))
        if real.parent.name == "blobs" and _HEX64.fullmatch(real.name):
            return real.name  # a Hugging Face cache blob of an LFS file is named by its content's sha256
        stat = real.stat()
        if stat.st_size < _MEMO_MIN_BYTES:
            return _sha256_file(real)
        seen = self._memo.get(str(real))
        if seen and seen["size"] == stat.st_size and seen["mtime_ns"] == stat.st_mtime_ns:
            return seen["sha256"]
        digest = _sha256_file(real)
        self._memo[str(real)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        self._save()
        return digest

    def _save(self) -> None:
        if self.file is None:
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.file, lambda tmp: Path(tmp).write_text(json.dumps(self._memo, indent=1)))
        except OSError:
            pass  # a read-only cache folder: hash again next time


def _folder_digest(folder: Path, memo: _HashMemo) -> dict[str, str]:
    """{relative file name: sha256} of every file under ``folder`` (hidden files and folders left out)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = memo.sha256(path)
    return files


@dataclass(frozen=True)
class CacheKey:
    """One cache entry's key (``digest``) and what it was made from, to name it in messages."""

    digest: str
    kind: str
    text: str
    source: str | None = None  # the edit's source image path (messages only: its bytes are in image_sha)
    image_sha: str | None = None

    def describe(self) -> str:
        what = f"{self.kind} text {self.text!r}"
        return what if self.source is None else f"{what} with source {self.source}"

    def record(self) -> dict[str, str | None]:
        """What a shard's index keeps about the entry (for people reading it; lookups use the digest)."""
        return {"kind": self.kind, "text": self.text, "source": self.source, "image_sha": self.image_sha}


class _ImageHashes:
    """sha256 of source image files, per (path, size, mtime_ns): a trial hashes each source once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int, int], str] = {}

    def __call__(self, path: str | Path) -> str:
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._seen:
            self._seen[key] = _sha256_file(Path(path))
        return self._seen[key]


_image_sha = _ImageHashes()


def _tokenizer_folder(folder: Path, kind: str) -> Path:
    """Where a pipeline's prompt tokenizer lives: the edit pipeline tokenizes with its processor's."""
    if kind == EDIT and (folder / "processor" / "tokenizer_config.json").is_file():
        return folder / "processor"
    return folder / "tokenizer"


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    if not folder.is_dir():
        raise ValueError(f"{folder}: no tokenizer folder (expected the pipeline's save_pretrained layout)")
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


class PipelineTexts:
    """A pipeline folder's text side without its weights: kind, tokenizer, template and cache keys.

    ``hash_memo`` is where big files' hashes are remembered (a cache folder's ``file-hashes.json``);
    ``vl_area`` is the edit template's source area (None: :data:`EDIT_VL_AREA`; part of its identity).
    """

    def __init__(self, folder: str | Path, hash_memo: str | Path | None = None, vl_area: int | None = None):
        self.folder = Path(folder)
        self.kind = pipeline_kind(self.folder)
        self.vl_area = _vl_area(vl_area)
        self._memo = _HashMemo(Path(hash_memo) if hash_memo is not None else None)

    @cached_property
    def tokenizer(self) -> Any:
        return _load_tokenizer(_tokenizer_folder(self.folder, self.kind))

    @cached_property
    def template(self) -> PromptTemplate:
        return PromptTemplate.of_pipeline(self.kind, self.tokenizer, self.vl_area)

    @cached_property
    def hidden_size(self) -> int:
        """The text encoder's hidden size D, from its config.json (an empty batch is [0, 0, D])."""
        config = json.loads((self.folder / "text_encoder" / "config.json").read_text())
        return int(config.get("text_config", config).get("hidden_size", config.get("hidden_size")))

    @cached_property
    def encoder_id(self) -> str:
        """sha256 of the contents of text_encoder/, the tokenizer and (edits) processor/."""
        parts = ["text_encoder", "tokenizer"] + (["processor"] if self.kind == EDIT else [])
        missing = [p for p in parts[:2] if not (self.folder / p).is_dir()]
        if missing:
            raise ValueError(f"{self.folder}: no {', '.join(p + '/' for p in missing)} folder")
        files = {p: _folder_digest(self.folder / p, self._memo) for p in parts if (self.folder / p).is_dir()}
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()

    def key(self, text: str, source: str | Path | None = None) -> CacheKey:
        """The cache key of ``text`` (an edit also needs its source image file)."""
        if not isinstance(text, str):
            raise TypeError(f"expected a text, got {type(text).__name__}")
        if (source is None) != (self.kind == T2I):
            need = "no source image" if self.kind == T2I else "a source image"
            raise ValueError(f"{self.folder} encodes {self.kind} texts: {text!r} needs {need}")
        image_sha = None if source is None else _image_sha(source)
        fields = [CACHE_FORMAT, self.encoder_id, self.template.identity, text, image_sha]
        digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()
        return CacheKey(digest, self.kind, text, None if source is None else str(source), image_sha)


# -- the encoder --------------------------------------------------------------------------------------


def _prompt_image(image: Any, vl_area: int) -> Any:
    """The source as QwenImageEditPipeline.__call__ hands it to encode_prompt (about ``vl_area`` pixels)."""
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

    width, height, _ = calculate_dimensions(vl_area, image.size[0] / image.size[1])
    return _pipeline_stub(EDIT).image_processor.resize(image, height, width)


def pad_rows(rows: Sequence[torch.Tensor], dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[L_i, D] rows -> zero-padded [B, L_max, D] and a long mask [B, L_max], as the pipelines pad."""
    if not rows:
        return torch.zeros(0, 0, dim or 0), torch.zeros(0, 0, dtype=torch.long)
    length = max(r.shape[0] for r in rows)
    text = torch.stack([torch.cat([r, r.new_zeros(length - r.shape[0], r.shape[1])]) for r in rows])
    mask = torch.stack(
        [
            torch.cat(
                [torch.ones(r.shape[0], dtype=torch.long), torch.zeros(length - r.shape[0], dtype=torch.long)]
            )
            for r in rows
        ]
    ).to(text.device)
    return text, mask


class QwenPromptEncoder:
    """Texts (and edit sources) -> Qwen-Image conditions, exactly as the pipeline computes them.

    ``loads`` counts, over the process, the text encoders :meth:`from_pipeline_folder` loaded: a trial on
    a warm cache must leave it unchanged.
    """

    loads = 0

    def __init__(
        self, text_encoder: Any, tokenizer: Any, template: PromptTemplate, image_processor: Any = None
    ):
        if template.kind == EDIT and image_processor is None:
            raise ValueError("an edit encoder needs the pipeline's image processor (processor/)")
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.template = template
        self.image_processor = image_processor

    @classmethod
    def from_pipeline_folder(
        cls,
        folder: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        vl_area: int | None = None,
    ) -> QwenPromptEncoder:
        """Load text_encoder/, the tokenizer and (edits) processor/ of a pipeline folder, local files only.

        ``vl_area``: pixels an edit's source is resized to (None: :data:`EDIT_VL_AREA`, the pipeline's).
        """
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

        folder = Path(folder)
        kind = pipeline_kind(folder)
        tokenizer = _load_tokenizer(_tokenizer_folder(folder, kind))
        template = PromptTemplate.of_pipeline(kind, tokenizer, vl_area)
        image_processor = None
        if kind == EDIT:
            if not (folder / "processor").is_dir():
                raise ValueError(f"{folder}: an edit pipeline folder needs processor/ (its image processor)")
            # The PIL ("slow") Qwen2-VL processor: the default one wants torchvision.
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(
                folder / "processor", local_files_only=True
            )
        if not (folder / "text_encoder").is_dir():
            raise ValueError(f"{folder}: no text_encoder/ folder")
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            folder / "text_encoder", dtype=dtype, local_files_only=True
        )
        cls.loads += 1
        return cls(model.to(device).eval().requires_grad_(False), tokenizer, template, image_processor)

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    def model_inputs(
        self, texts: Sequence[str], images: Sequence[Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """What the pipeline feeds its encoder: input_ids, attention_mask (+ pixel_values, image_grid_thw)."""
        t = self.template
        formatted = [t.template.format(text) for text in texts]
        if t.kind == T2I:
            if images is not None:
                raise ValueError("T2I prompts take no images")
            tokens = self.tokenizer(
                formatted, max_length=t.max_length, padding=True, truncation=True, return_tensors="pt"
            )
            return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
        if images is None or len(images) != len(texts):
            raise ValueError(f"{len(texts)} edit instructions need as many source images")
        for text in texts:
            if VISION_START in text or IMAGE_PAD in text:
                raise ValueError(f"instruction {text!r} holds a vision token")
        vision = self.image_processor(
            images=[_prompt_image(im, t.vl_area) for im in images], return_tensors="pt"
        )
        merge = self.image_processor.merge_size**2
        counts = (vision["image_grid_thw"].prod(-1) // merge).tolist()
        # Qwen2VLProcessor's expansion: one <|image_pad|> per merged patch of that row's image.
        expanded = [f.replace(IMAGE_PAD, IMAGE_PAD * int(n)) for f, n in zip(formatted, counts, strict=True)]
        tokens = self.tokenizer(expanded, padding=True, return_tensors="pt")
        return {
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": vision["image_grid_thw"],
        }

    @torch.inference_mode()
    def encode_each(self, texts: Sequence[str], images: Sequence[Any] | None = None) -> list[torch.Tensor]:
        """One [L_i, D] condition per text (in the encoder's dtype, on its device), in one forward pass."""
        if isinstance(texts, str):
            raise TypeError("encode_each() takes a list of texts, got a single string")
        if not texts:
            return []
        inputs = {k: v.to(self.device) for k, v in self.model_inputs(texts, images).items()}
        hidden = self.text_encoder(**inputs, output_hidden_states=True).hidden_states[-1]
        # _extract_masked_hidden, then the template prefix dropped
        mask = inputs["attention_mask"].bool()
        rows = torch.split(hidden[mask], mask.sum(dim=1).tolist(), dim=0)
        return [row[self.template.drop_idx :].clone() for row in rows]

    def encode(
        self, texts: Sequence[str], images: Sequence[Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded [B, L, D] conditions and their long mask [B, L]: ``_get_qwen_prompt_embeds``'s output."""
        return pad_rows(
            self.encode_each(texts, images), int(self.text_encoder.config.text_config.hidden_size)
        )


# -- the cache ----------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Any) -> None:
    """``write(tmp)`` into a temp file beside ``path``, fsync, rename: readers see no half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class MissingTextError(KeyError):
    """A text (or edit) with no cache entry; the message names it and how to fill the cache."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


class TextCache:
    """A folder of safetensors shards, each holding some entries ([L_i, D] conditions) and their index.

    A shard's index is JSON in its safetensors metadata (``entries``: digest -> kind, text, source, image
    sha), its tensors are named by digest; so a shard is written, and committed, by one atomic rename, and
    no file is shared by writers. Shards are never rewritten or deleted, so any number of readers see whole
    entries only, and a digest a reader lacks sends it to look for new shards once before it gives up.
    Entries keep the dtype they were encoded in (fp32 from a CPU encoder, bf16 from a GPU one: half the disk
    of a bf16 model's output, lossless for it).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._where: dict[str, Path] = {}
        self._records: dict[str, dict] = {}
        self._seen: set[Path] = set()
        self.refresh()

    def shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors"))

    def refresh(self) -> None:
        """Index shards written since the last look (another process's ``prepare``)."""
        for path in self.shards():
            if path in self._seen:
                continue
            with safe_open(path, framework="pt") as f:  # the header only: tensors are read when asked for
                meta = f.metadata() or {}
            if meta.get("format") != CACHE_FORMAT:
                raise ValueError(f"{path}: not a {CACHE_FORMAT} shard (format {meta.get('format')!r})")
            self._seen.add(path)
            for digest, record in json.loads(meta["entries"]).items():
                self._where.setdefault(digest, path)
                self._records.setdefault(digest, record)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: CacheKey | str) -> bool:
        return (key.digest if isinstance(key, CacheKey) else key) in self._where

    def records(self) -> dict[str, dict]:
        """digest -> what the entry holds (kind, text, source, image_sha)."""
        return dict(self._records)

    def get(self, keys: Sequence[CacheKey | str]) -> list[torch.Tensor]:
        """The [L_i, D] entry of each key; MissingTextError (a KeyError) names the first missing one."""
        if any(k not in self for k in keys):
            self.refresh()
        for k in keys:
            if k not in self:
                what = k.describe() if isinstance(k, CacheKey) else f"entry {k}"
                raise MissingTextError(
                    f"text cache {self.folder} has no {what}; encode the world's texts first with "
                    "`python -m trainers.worlds.diffusers prepare WORLD`"
                )
        digests = [k.digest if isinstance(k, CacheKey) else k for k in keys]
        by_shard: dict[Path, list[str]] = {}
        for d in dict.fromkeys(digests):
            by_shard.setdefault(self._where[d], []).append(d)
        rows: dict[str, torch.Tensor] = {}
        for path, wanted in by_shard.items():  # opened per call: no file handles pile up in a long trial
            with safe_open(path, framework="pt") as f:
                rows.update({d: f.get_tensor(d) for d in wanted})
        return [rows[d] for d in digests]

    def put(self, entries: Sequence[tuple[CacheKey, torch.Tensor]]) -> Path | None:
        """Write the entries not cached yet as one new shard (atomically); returns it, or None if none."""
        fresh: dict[str, tuple[CacheKey, torch.Tensor]] = {}
        for key, row in entries:
            if row.dim() != 2:
                raise ValueError(f"{key.describe()}: an entry is [L, D], got shape {tuple(row.shape)}")
            if key not in self and key.digest not in fresh:
                fresh[key.digest] = (key, row)
        if not fresh:
            return None
        tensors = {d: row.detach().to("cpu").contiguous().clone() for d, (_, row) in fresh.items()}
        meta = {"format": CACHE_FORMAT, "entries": json.dumps({d: k.record() for d, (k, _) in fresh.items()})}
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"shard-{uuid.uuid4().hex}.safetensors"
        _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        self.refresh()
        return path


def _pipeline_texts(folder: str | Path, kind: str, memo: Path, vl_area: int | None = None) -> PipelineTexts:
    texts = PipelineTexts(folder, memo, vl_area)
    if texts.kind != kind:
        wanted = {T2I: "QwenImagePipeline folder for prompts", EDIT: "QwenImageEditPipeline folder for edits"}
        raise ValueError(f"{folder}: expected a {wanted[kind]}, found a {texts.kind} pipeline")
    return texts


# -- conditions for trials ----------------------------------------------------------------------------


class CachedConditions:
    """Per-row padded (text [B, L, D], mask [B, L]) conditions of prompts and edits, from a warm cache.

    With ``allow_encode`` False (a trial's setting) a missing entry raises :class:`MissingTextError` and
    no text encoder is ever loaded; with it True the pipeline's encoder is loaded on the first miss, the
    misses are encoded and written to the cache. T2I rows are cut to ``QwenImagePipeline.__call__``'s
    default ``max_sequence_length`` (512), as the pipeline cuts them; edit rows are not cut (nor does the
    edit pipeline). Rows come back as ``dtype`` (float32: the models cast them to their own dtype).
    ``vl_area`` is the edit sources' area (None: :data:`EDIT_VL_AREA`); it must be the one ``prepare``
    used, or every edit misses (it is part of the keys).
    """

    def __init__(
        self,
        cache_folder: str | Path,
        pipeline: str | Path,
        edit_pipeline: str | Path | None = None,
        *,
        allow_encode: bool = False,
        device: str | torch.device = "cpu",
        encoder_dtype: torch.dtype = torch.float32,
        dtype: torch.dtype | None = torch.float32,
        vl_area: int | None = None,
    ):
        self.cache = TextCache(cache_folder)
        memo = Path(cache_folder) / _HASH_MEMO
        self.texts = {T2I: _pipeline_texts(pipeline, T2I, memo)}
        if edit_pipeline is not None:
            self.texts[EDIT] = _pipeline_texts(edit_pipeline, EDIT, memo, vl_area)
        self.allow_encode = allow_encode
        self.device, self.encoder_dtype, self.dtype = device, encoder_dtype, dtype
        self.max_sequence_length = t2i_max_sequence_length()
        self._encoders: dict[str, QwenPromptEncoder] = {}

    @classmethod
    def for_world(cls, config: Any, allow_encode: bool = False, **options: Any) -> CachedConditions:
        """From a WorldConfig (``pipeline``, ``edit_pipeline``, ``text_cache``: absolute paths; its
        ``edit_vision_area`` is the edit sources' ``vl_area``)."""
        options.setdefault("vl_area", config.edit_vision_area)
        return cls(
            config.text_cache, config.pipeline, config.edit_pipeline, allow_encode=allow_encode, **options
        )

    def t2i(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditions of T2I prompts ("" is the unconditional branch)."""
        if isinstance(prompts, str):
            raise TypeError("t2i() takes a list of prompts, got a single string")
        rows = self._rows(T2I, [(p, None) for p in prompts])
        return self._padded([r[: self.max_sequence_length] for r in rows], T2I)

    def edit(self, edits: Sequence[tuple[str, str | Path]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditions of (instruction, source image path) edits (("", source) is the unconditional branch)."""
        if EDIT not in self.texts:
            raise ValueError("these conditions have no edit pipeline: edits cannot be conditioned")
        return self._padded(self._rows(EDIT, [(i, s) for i, s in edits]), EDIT)

    def t2i_null(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` rows of the empty prompt: the T2I unconditional (CFG) branch."""
        return self.t2i([""] * n)

    def edit_null(self, sources: Sequence[str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
        """The empty instruction encoded *with* each source: the edit's unconditional branch."""
        return self.edit([("", s) for s in sources])

    def _padded(self, rows: list[torch.Tensor], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        text, mask = pad_rows(rows, self.texts[kind].hidden_size)
        return (text if self.dtype is None else text.to(self.dtype)), mask

    def _rows(self, kind: str, items: Sequence[tuple[str, str | Path | None]]) -> list[torch.Tensor]:
        texts = self.texts[kind]
        keys = [texts.key(text, source) for text, source in items]
        if self.allow_encode and any(k not in self.cache for k in keys):
            self.cache.refresh()  # another process may have encoded them meanwhile
            missing = list({k.digest: k for k in keys if k not in self.cache}.values())
            if missing:
                if kind not in self._encoders:
                    self._encoders[kind] = QwenPromptEncoder.from_pipeline_folder(
                        texts.folder, self.device, self.encoder_dtype, texts.vl_area
                    )
                _encode_into(self.cache, self._encoders[kind], missing, BATCH_SIZE, progress=False)
        return self.cache.get(keys)


# -- prepare ------------------------------------------------------------------------------------------


def _open_image(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.copy()


def _encode_into(
    cache: TextCache, encoder: QwenPromptEncoder, keys: Sequence[CacheKey], batch_size: int, progress: bool
) -> None:
    """Encode ``keys`` in batches (similar lengths together: less padding) and commit shards as they fill."""
    from tqdm.auto import tqdm

    order = sorted(keys, key=lambda k: (k.source or "", len(k.text)))
    pending: list[tuple[CacheKey, torch.Tensor]] = []
    size = 0
    desc = f"encoding {encoder.template.kind} texts"
    with tqdm(total=len(order), desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            images = None if encoder.template.kind == T2I else [_open_image(k.source) for k in batch]
            rows = encoder.encode_each([k.text for k in batch], images)
            for key, row in zip(batch, rows, strict=True):
                pending.append((key, row.cpu()))
                size += row.numel() * row.element_size()
            if size >= _SHARD_BYTES:
                cache.put(pending)
                pending, size = [], 0
            bar.update(len(batch))
    cache.put(pending)


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _default_device_dtype(device: str | None, dtype: torch.dtype | None) -> tuple[str, torch.dtype]:
    """cuda + bf16 where a GPU is (Qwen-Image's own precision), else cpu + fp32 (bf16 is slow on CPUs)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return device, dtype


def prepare(
    world_root: str | Path,
    pipeline_folder: str | Path,
    edit_pipeline_folder: str | Path | None,
    prompts: Sequence[str],
    edits: Sequence[tuple[str, str | Path]],
    cache_folder: str | Path,
    device: str | None = "cpu",
    dtype: torch.dtype | None = None,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    vl_area: int | None = None,
) -> dict[str, int]:
    """Encode every prompt, every (instruction, source) edit and both unconditional branches not cached yet.

    Relative folders and source paths are relative to ``world_root``. The T2I null is the empty prompt
    ""; the edit null is the empty instruction with each source. Each pipeline's text encoder is loaded
    only if it has something to encode, and freed before the next. One ``prepare`` at a time per cache
    (a file lock): a second waits, then finds the entries. Returns counts: ``encoded``, ``cached`` (found).
    ``vl_area``: pixels each edit source is resized to for the vision tower (None: :data:`EDIT_VL_AREA`).
    """
    root = Path(world_root)
    at = lambda p: Path(p) if Path(p).is_absolute() else root / p  # noqa: E731
    cache_folder = at(cache_folder)
    if edits and edit_pipeline_folder is None:
        raise ValueError(f"{len(edits)} edits to encode but no edit pipeline folder")
    device, dtype = _default_device_dtype(device, dtype)
    cache_folder.mkdir(parents=True, exist_ok=True)
    memo = cache_folder / _HASH_MEMO
    stats = {"encoded": 0, "cached": 0}
    with FileLock(str(cache_folder / ".prepare.lock")):
        cache = TextCache(cache_folder)
        jobs = [
            (_pipeline_texts(at(pipeline_folder), T2I, memo), [(p, None) for p in _unique(["", *prompts])])
        ]
        if edits:
            sources = _unique(str(at(s)) for _, s in edits)
            items = _unique([("", s) for s in sources] + [(i, str(at(s))) for i, s in edits])
            jobs.append((_pipeline_texts(at(edit_pipeline_folder), EDIT, memo, vl_area), items))
        for texts, items in jobs:
            keys = list({k.digest: k for k in (texts.key(t, s) for t, s in items)}.values())
            missing = [k for k in keys if k not in cache]
            stats["cached"] += len(keys) - len(missing)
            stats["encoded"] += len(missing)
            if missing:
                encoder = QwenPromptEncoder.from_pipeline_folder(texts.folder, device, dtype, texts.vl_area)
                _encode_into(cache, encoder, missing, batch_size, progress)
                del encoder
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
    return stats


def prepare_world(config: Any, progress: bool = True, **options: Any) -> dict[str, int]:
    """``prepare`` for a WorldConfig: every manifest prompt and edit (all splits) into its text cache,
    edit sources at the world's ``edit_vision_area``."""
    import pyarrow.parquet as pq

    prompts = pq.read_table(config.prompts, columns=["prompt"])["prompt"].to_pylist()
    edits: list[tuple[str, str]] = []
    if config.edits is not None:
        table = pq.read_table(config.edits, columns=["instruction", "source"])
        edits = list(zip(table["instruction"].to_pylist(), table["source"].to_pylist(), strict=True))
    options.setdefault("device", None)
    options.setdefault("vl_area", config.edit_vision_area)
    return prepare(
        config.root,
        config.pipeline,
        config.edit_pipeline,
        prompts,
        edits,
        config.text_cache,
        progress=progress,
        **options,
    )


# -- command line ---------------------------------------------------------------------------------------


def _read_prompts(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=["prompt"])["prompt"].to_pylist()
    return [line for line in path.read_text().splitlines() if line.strip()]


def _read_edits(path: Path) -> list[tuple[str, str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["instruction", "source"])
    return list(zip(table["instruction"].to_pylist(), table["source"].to_pylist(), strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trainers.worlds.diffusers.text --pipeline DIR --prompts FILE --cache DIR [...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m trainers.worlds.diffusers.text",
        description="Encode prompts and edit instructions once with the pipelines' own text encoders.",
    )
    parser.add_argument(
        "--pipeline", type=Path, required=True, help="QwenImagePipeline folder (save_pretrained)"
    )
    parser.add_argument(
        "--edit-pipeline", type=Path, help="QwenImageEditPipeline folder, needed with --edits"
    )
    parser.add_argument(
        "--prompts",
        type=Path,
        required=True,
        help="prompts: a parquet file with a 'prompt' column, or a text file, one per line",
    )
    parser.add_argument(
        "--edits", type=Path, help="edits: a parquet file with 'instruction' and 'source' columns"
    )
    parser.add_argument("--cache", type=Path, required=True, help="the text cache folder to fill")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path("."),
        help="folder that relative folders and source paths are relative to (default: .)",
    )
    parser.add_argument(
        "--device", default=None, help="where the encoder runs (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default=None,
        help="encoder precision (default: bfloat16 on cuda, float32 on cpu)",
    )
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="texts per encoder forward pass")
    parser.add_argument(
        "--edit-vision-area",
        type=int,
        default=None,
        help=f"pixels each edit source is resized to for the vision tower (default: {EDIT_VL_AREA}, "
        "QwenImageEditPipeline's; smaller only for small test worlds)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.edits is not None and args.edit_pipeline is None:
        parser.error("--edits needs --edit-pipeline")
    if args.edit_vision_area is not None and args.edit_vision_area <= 0:
        parser.error(f"--edit-vision-area must be a positive number of pixels, got {args.edit_vision_area}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stats = prepare(
        args.root,
        args.pipeline,
        args.edit_pipeline,
        _read_prompts(args.prompts),
        _read_edits(args.edits) if args.edits is not None else [],
        args.cache,
        device=args.device,
        dtype=None if args.dtype is None else getattr(torch, args.dtype),
        batch_size=args.batch_size,
        progress=not args.no_progress,
        vl_area=args.edit_vision_area,
    )
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
