"""All weight and training-state IO: the one module that reads or writes a checkpoint.

- Models (``FlowModel``, any diffusers ``ModelMixin``) are diffusers folders, config.json +
  safetensors: :func:`save_model` (optionally cast, e.g. fp16 for the shipped teachers),
  :func:`load_model` (a new model; ``frozen`` for teachers) and :func:`load_into` (weights into a
  built model, for resume).
- Plain tensor dicts (the tiny world's judge) are one safetensors file: :func:`save_tensors`,
  :func:`load_tensors`.
- Training state (optimiser state dicts, LR schedulers, RNG states, counters) is flattened without
  pickle: each tensor leaf goes into ``state.safetensors`` under its key path, and ``state.json``
  keeps a ``{"__tensor__": key}`` placeholder in its place. Dicts with int keys (optimiser states key
  parameters by index) and tuples are tagged so they come back as they went in. Loading needs
  neither pickle nor ``torch.load``: :func:`save_state`, :func:`load_state`.
- Adapters of an adapter-mode run (``trainers.adapters``) are peft adapter folders,
  adapter_config.json + adapter_model.safetensors: :func:`save_adapter`, :func:`load_adapter`.
  :func:`save_model` given an adapter view writes the plain model with it merged in (a promoted student).
- A trainer checkpoint folder is model folders (student/, fake/, ema/: diffusers folders in full mode,
  adapter folders in adapter mode) + the state + recipe.yaml: :func:`save_checkpoint`,
  :func:`checkpoint_recipe`, :func:`load_checkpoint`. Every folder is written through
  :func:`write_atomically`, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from trainers.adapters import AdapterView, merged_student
from trainers.recipe import Recipe

if TYPE_CHECKING:  # annotations only: this module does not import diffusers itself
    from diffusers import ModelMixin

M = TypeVar("M", bound="ModelMixin")

TENSOR = "__tensor__"
INT_KEYS = "__int_keys__"  # JSON object keys are strings: int keys are tagged to come back as ints
TUPLE = "__tuple__"  # JSON has only lists: tuples (e.g. AdamW betas) are tagged to come back as tuples
STATE_JSON, STATE_TENSORS = "state.json", "state.safetensors"
RECIPE_FILE = "recipe.yaml"  # the exact recipe a checkpoint was trained with
CARD_FILE = "card.json"  # a model folder's card: what it is, how it was trained, how it scores
MODEL_SUBFOLDER = "transformer"  # a promoted student's weights, as in a diffusers pipeline folder
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # peft's file names


# --- models and tensor files ----------------------------------------------------------------------


def save_card(folder: str | Path, card: dict[str, Any]) -> Path:
    """Write ``card.json`` (indented JSON) into the model folder ``folder``."""
    path = Path(folder) / CARD_FILE
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def load_card(folder: str | Path) -> dict[str, Any]:
    """The ``card.json`` of the model folder ``folder``."""
    return json.loads((Path(folder) / CARD_FILE).read_text())


def save_model(model: ModelMixin, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``model`` as a diffusers folder (config.json + safetensors); ``dtype`` casts a copy first.

    The model itself is never cast: the shipped teachers are stored in fp16 (half the bytes; the tiny
    world's scores do not move) while training goes on in float32. An adapter view (adapter mode) is
    written as the plain model with its adapter merged in (:func:`trainers.adapters.merged_student`).
    """
    if isinstance(model, AdapterView):
        model = merged_student(model)
    # nn.Module.to casts floating-point tensors only, as .half() does; diffusers' override would warn
    # that a cast model should be loaded with torch_dtype instead, which is not what happens here
    stored = model if dtype is None else torch.nn.Module.to(copy.deepcopy(model), dtype)
    stored.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def load_model(cls: type[M], folder: str | Path, subfolder: str | None = None,
               dtype: torch.dtype = torch.float32, frozen: bool = False) -> M:
    """A model of class ``cls`` from a diffusers folder (weights cast to ``dtype``), in eval mode.

    ``frozen`` also turns off its gradients (teachers); a promoted student is
    ``load_model(FlowModel, folder, subfolder="transformer")``.
    """
    model = cls.from_pretrained(folder, subfolder=subfolder, torch_dtype=dtype).eval()
    return model.requires_grad_(False) if frozen else model


def load_into(model: ModelMixin, folder: str | Path) -> None:
    """Copy the weights of the diffusers folder ``folder`` into the already built ``model`` (resume)."""
    model.load_state_dict(load_model(type(model), folder).state_dict())


def save_adapter(view: AdapterView, folder: str | Path) -> Path:
    """Write one adapter of an adapter-mode run as a peft adapter folder (adapter_config.json +
    adapter_model.safetensors), in the dtype it trains in: a resume continues bit for bit, and
    ``peft.PeftModel.from_pretrained(base, folder)`` loads it onto a copy of the base."""
    from peft import get_peft_model_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model = view.host.peft
    peft_model.peft_config[view.adapter].save_pretrained(str(folder))
    tensors = get_peft_model_state_dict(peft_model, adapter_name=view.adapter)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / ADAPTER_WEIGHTS),
              metadata={"format": "pt"})
    return folder


def load_adapter(view: AdapterView, folder: str | Path) -> None:
    """Copy the adapter folder ``folder`` (:func:`save_adapter`) into the adapter of ``view`` (resume).

    The folder's rank, alpha, target modules and tensor names must be the view's: anything else
    is a ValueError naming the folder, not a partial load.
    """
    from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict

    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file():
        raise ValueError(f"{folder}: no {ADAPTER_CONFIG}: not an adapter folder (a full-mode checkpoint? "
                         "this run holds its models as adapters, Recipe.model_mode)")
    peft_model = view.host.peft
    ours, saved = peft_model.peft_config[view.adapter], LoraConfig.from_pretrained(str(folder))
    differ = [key for key in ("r", "lora_alpha", "target_modules")
              if _config_value(getattr(ours, key)) != _config_value(getattr(saved, key))]
    if differ:
        raise ValueError(f"{folder / ADAPTER_CONFIG}: {differ} differ from this run's adapter "
                         f"({', '.join(f'{k}={getattr(saved, k)!r}, not {getattr(ours, k)!r}' for k in differ)})")
    tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    expected = get_peft_model_state_dict(peft_model, adapter_name=view.adapter)
    wrong = sorted(set(tensors) ^ set(expected)) or sorted(
        k for k in expected if tensors[k].shape != expected[k].shape)
    if wrong:
        raise ValueError(f"{folder / ADAPTER_WEIGHTS}: tensors do not match this run's adapter: {wrong[:5]}")
    set_peft_model_state_dict(peft_model, tensors, adapter_name=view.adapter)


def _config_value(value: Any) -> Any:
    """A peft config value comparable after a JSON round trip (target module lists come back as sets)."""
    return sorted(value) if isinstance(value, (list, set, tuple, frozenset)) else value


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write a flat name -> tensor dict as one safetensors file (e.g. a state_dict of a plain nn.Module)."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return Path(path)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file written by :func:`save_tensors` (tensors on CPU)."""
    return load_file(str(path))


# --- training state ---------------------------------------------------------------------------------


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


# --- trainer checkpoint folders -----------------------------------------------------------------------


def save_checkpoint(path: str | Path, models: Mapping[str, ModelMixin | AdapterView | None], state: dict,
                    recipe: Recipe) -> Path:
    """Write a trainer checkpoint atomically: one model folder per entry of ``models`` (None: skipped),
    ``state.{json,safetensors}`` and ``recipe.yaml``."""

    def write(tmp: Path) -> None:
        for name, model in models.items():
            if isinstance(model, AdapterView):
                save_adapter(model, tmp / name)
            elif model is not None:
                save_model(model, tmp / name)
        save_state(tmp, state)
        (tmp / RECIPE_FILE).write_text(recipe.to_yaml())

    return write_atomically(path, write)


def checkpoint_recipe(path: str | Path) -> Recipe:
    """The recipe a checkpoint folder (trainer checkpoint or promoted student) was trained with."""
    return Recipe.from_yaml(Path(path) / RECIPE_FILE)


def checkpoint_step(path: str | Path) -> int:
    """The generator step a distill checkpoint folder was written at (read from its state.json)."""
    return int(json.loads((Path(path) / STATE_JSON).read_text())["dmd"]["step"])


def load_checkpoint(path: str | Path, models: Mapping[str, ModelMixin | AdapterView | None]) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`: weights into ``models`` (None: skipped),
    the training state returned."""
    path = Path(path)
    for name, model in models.items():
        if isinstance(model, AdapterView):
            load_adapter(model, path / name)
        elif model is not None:
            if (path / name / ADAPTER_CONFIG).is_file():
                raise ValueError(f"{path / name}: an adapter folder, but this run holds full models "
                                 "(the checkpoint was trained in adapter mode, Recipe.model_mode)")
            load_into(model, path / name)
    return load_state(path)
