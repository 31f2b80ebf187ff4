"""Training-state checkpoints without pickle: tensors in safetensors, everything else in JSON.

A nested state (optimiser state dicts, RNG states, counters) is flattened: each tensor leaf goes
into ``state.safetensors`` under its key path, and the JSON skeleton keeps a ``{"__tensor__": key}``
placeholder in its place. Loading needs neither pickle nor ``torch.load``. Model weights live
beside it as diffusers folders (``save_pretrained``), written by the caller.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TENSOR = "__tensor__"
INT_KEYS = "__int_keys__"  # optimiser state dicts key parameters by int: JSON would turn them into str


def flatten(state: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """JSON skeleton of ``state`` with tensors moved into ``tensors`` (keyed by their path)."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().cpu().contiguous()
        return {TENSOR: prefix}
    if isinstance(state, dict):
        ints = all(isinstance(k, int) for k in state) and bool(state)
        out = {str(k): flatten(v, tensors, f"{prefix}.{k}") for k, v in state.items()}
        return {INT_KEYS: out} if ints else out
    if isinstance(state, (list, tuple)):
        return [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(state)]
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"checkpoint: cannot store a {type(state).__name__} at {prefix}")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten`."""
    if isinstance(skeleton, dict):
        if TENSOR in skeleton:
            return tensors[skeleton[TENSOR]]
        if INT_KEYS in skeleton:
            return {int(k): unflatten(v, tensors) for k, v in skeleton[INT_KEYS].items()}
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_state(path: str | Path, state: dict) -> None:
    """Write ``state.safetensors`` + ``state.json`` into the folder ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    save_file(tensors, str(path / "state.safetensors"))
    (path / "state.json").write_text(json.dumps(skeleton))


def load_state(path: str | Path) -> dict:
    """Read a state written by :func:`save_state`."""
    path = Path(path)
    return unflatten(json.loads((path / "state.json").read_text()), load_file(str(path / "state.safetensors")))


def write_atomically(path: str | Path, write) -> Path:
    """Call ``write(tmp_dir)`` then move the folder to ``path``: a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        write(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path
