"""Training-state checkpoints without pickle: tensors in safetensors, everything else in JSON.

A nested state (optimiser state dicts, LR schedulers, RNG states, counters) is flattened: each
tensor leaf goes into ``state.safetensors`` under its key path, and the JSON skeleton keeps a
``{"__tensor__": key}`` placeholder in its place. Dicts with int keys (optimiser states key
parameters by index) and tuples are tagged so they come back as they went in. Loading needs
neither pickle nor ``torch.load``. Model weights live beside it as diffusers folders
(``save_pretrained``, also safetensors), written by the caller; this is the one module that
writes training state.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSOR = "__tensor__"
INT_KEYS = "__int_keys__"  # JSON object keys are strings: int keys are tagged to come back as ints
TUPLE = "__tuple__"  # JSON has only lists: tuples (e.g. AdamW betas) are tagged to come back as tuples
STATE_JSON, STATE_TENSORS = "state.json", "state.safetensors"


def flatten(state: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """JSON skeleton of ``state`` with tensors moved into ``tensors`` (keyed by their path)."""
    if isinstance(state, torch.Tensor):
        if prefix in tensors:
            raise ValueError(f"checkpoint: two tensors at the key path {prefix!r} (a dict key with a dot?)")
        # clone: safetensors refuses tensors sharing memory, and the file must not alias live state
        tensors[prefix] = state.detach().cpu().clone().contiguous()
        return {TENSOR: prefix}
    if isinstance(state, dict):
        if any(not isinstance(k, (str, int)) or isinstance(k, bool) for k in state):
            raise TypeError(f"checkpoint: dict keys at {prefix} must be str or int, got {list(state)}")
        out = {str(k): flatten(v, tensors, f"{prefix}.{k}") for k, v in state.items()}
        if state and all(isinstance(k, int) for k in state):
            return {INT_KEYS: out}
        if any(isinstance(k, int) for k in state):
            raise TypeError(f"checkpoint: dict at {prefix} mixes int and str keys")
        return out
    if isinstance(state, (list, tuple)):
        items = [flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(state)]
        return {TUPLE: items} if isinstance(state, tuple) else items
    if isinstance(state, np.generic):  # numpy scalars (e.g. a count from np.sum) as plain Python values
        return state.item()
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
        if TUPLE in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton[TUPLE])
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
    save_file(tensors, str(path / STATE_TENSORS))
    (path / STATE_JSON).write_text(json.dumps(skeleton))


def load_state(path: str | Path) -> dict:
    """Read a state written by :func:`save_state` (tensors on CPU)."""
    path = Path(path)
    for name in (STATE_JSON, STATE_TENSORS):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path}: no {name} (not a folder written by save_state)")
    return unflatten(json.loads((path / STATE_JSON).read_text()), load_file(str(path / STATE_TENSORS)))


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` then rename the folder to ``path``: a crash never leaves half a checkpoint.

    An existing checkpoint at ``path`` is moved aside first and deleted only after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new."))
    old = path.parent / f".{path.name}.old.{tmp.name.rsplit('.', 1)[-1]}"
    try:
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; a checkpoint is read by other processes too
        write(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
    return path
