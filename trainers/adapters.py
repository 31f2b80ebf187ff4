"""Adapter mode: student G, fake score F (and the EMA of G) as LoRA adapters on one frozen base.

A real-size base (Qwen-Image, ~20B parameters) cannot be copied twice for G and F, with AdamW
state for both, next to the frozen teachers. FastGen/DMD2-style LoRA training keeps one frozen
base and trains low-rank adapters instead (peft ``LoraConfig``, B = 0 at the start, so G = F =
base as in DMD2's full copies):

- :class:`LoraHost` holds a *twin* of the base teacher's module — its own module tree with the
  teacher's very parameter tensors (no weights copied, :func:`shared_twin`) — and injects the
  adapters into the twin. The teacher's own module is left untouched: it still is the base with
  no adapters, a cached world (``trainers.world.SharedWorld``) can hand it to the next run, and
  the teachers never toggle adapters.
- :class:`AdapterView` runs the twin with one adapter active (``None``: none). It has the model
  contract ``view(z_t, t, text, text_mask, source=None) -> v`` and its ``parameters()`` are its
  adapter's alone, so optimisers, gradient clipping, the all-reduce, the finiteness checks and
  the EMA (``trainers.dmd``) treat it as any model. The twin is a plain attribute, not a
  submodule: ``requires_grad_``, ``train``, ``to`` on a view reach its adapter only.
- :func:`merged_student` gives a standalone plain copy of the base with one adapter merged in
  (peft ``merge_and_unload`` on a copy): what a promoted student is saved as.

Weights are read and written by ``trainers.checkpoint`` (peft's adapter format). peft is imported
on first use: the sweep driver imports this module's dependants without building a model.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # annotations only: peft is imported when a host is built
    from peft import LoraConfig, PeftModel

# The attention projections (image and text streams) and the MLP linears of every block of a diffusers
# Qwen-Image transformer, as FastGen's LoRA recipes for MMDiTs pick them; the modulation linears
# (img_mod/txt_mod) and the embedders stay frozen. A regular expression (peft's full match on module
# names), so it finds the blocks under any wrapper: FlowModel.transformer, QwenLatentModel.transformer.
QWEN_IMAGE_TARGETS = (
    r".*transformer_blocks\.\d+\.("
    r"attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
    r"|(img|txt)_mlp\.net\.(0\.proj|2))"
)
STUDENT, FAKE, EMA = "student", "fake", "ema"  # adapter names of a DMD run (and checkpoint folder names)


@dataclass(frozen=True)
class LoraSpec:
    """Shape of every adapter of a host: rank, alpha and which modules get one."""

    rank: int = 16
    alpha: float | None = None  # None: alpha = rank, a scale of 1 (the learning rate means the same at any rank)
    targets: str | tuple[str, ...] = QWEN_IMAGE_TARGETS  # a regex (full match) or module-name suffixes

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")

    def lora_config(self) -> LoraConfig:
        """The peft config: no dropout (DMD's forwards must be deterministic for exact resume), B = 0 init."""
        from peft import LoraConfig

        targets = self.targets if isinstance(self.targets, str) else list(self.targets)
        alpha = self.rank if self.alpha is None else self.alpha
        return LoraConfig(r=self.rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, bias="none")


def shared_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree that holds the *same* parameter and buffer tensors.

    Nothing the size of the weights is copied (plain tensor attributes, e.g. RoPE tables, are), and
    replacing a submodule of the twin (peft's LoRA injection) leaves ``model`` as it was.
    """
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Turn on gradient checkpointing in the outermost diffusers modules of ``model`` that support it.

    A FlowModel (or a QwenLatentModel) does not support it itself, its ``.transformer`` does. Returns
    how many modules were switched; a model with none is an error (the recipe asked for it).
    """
    switched: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{done}.") or not done for done in switched):
            continue  # inside a module already switched (its blocks follow its flag)
        if getattr(module, "_supports_gradient_checkpointing", False) and hasattr(
                module, "enable_gradient_checkpointing"):
            module.enable_gradient_checkpointing()
            switched.append(name)
    if not switched:
        raise ValueError(f"gradient_checkpointing: {type(model).__name__} has no module that supports it "
                         "(a diffusers model with _supports_gradient_checkpointing)")
    return len(switched)


class LoraHost:
    """One frozen base (a twin of ``base`` sharing its weights) carrying named LoRA adapters.

    At most one adapter is active at a time; :class:`AdapterView` switches to its own for each
    forward. A forward under ``no_grad`` puts the previous adapter back afterwards; one with
    gradients leaves its adapter active, because gradient checkpointing recomputes the forward
    during ``backward()`` and must see the same adapter. DMD runs one gradient forward per
    backward (G's last sampler step, or F on the fake-score loss): the others run under no_grad.
    Not thread-safe (the active adapter is the host's state).
    """

    def __init__(self, base: nn.Module, adapters: Sequence[str] = (STUDENT, FAKE), spec: LoraSpec = LoraSpec(),
                 gradient_checkpointing: bool = False):
        from peft import get_peft_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not adapters or len(set(adapters)) != len(adapters):
            raise ValueError(f"adapters must be distinct names, got {list(adapters)}")
        self.spec, self.adapters = spec, tuple(adapters)
        twin = shared_twin(base)
        if gradient_checkpointing:
            enable_gradient_checkpointing(twin)
        config = spec.lora_config()
        self.peft: PeftModel = get_peft_model(twin, config, adapter_name=self.adapters[0])
        for name in self.adapters[1:]:
            self.peft.add_adapter(name, config)
        self.model: nn.Module = self.peft.get_base_model()  # the twin, its target linears now LoRA layers
        self.model.eval()  # the shared base's own mode; views keep theirs (the base has no dropout)
        self._layers = [(path, m) for path, m in self.model.named_modules() if isinstance(m, BaseTunerLayer)]
        self._views: dict[str | None, AdapterView] = {}
        self._active: str | None = ""  # neither None nor an adapter: the first switch sets every layer
        self._activate(None)
        for name in self.adapters:  # peft's add_adapter left only the first one trainable
            self.view(name).requires_grad_(True)

    def view(self, adapter: str | None) -> AdapterView:
        """The model that runs the base with ``adapter`` active (``None``: with no adapter)."""
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"no adapter {adapter!r} on this base (have {list(self.adapters)})")
        if adapter not in self._views:
            self._views[adapter] = AdapterView(self, adapter)
        return self._views[adapter]

    def adapter_modules(self, adapter: str) -> dict[str, nn.Module]:
        """Module path -> {lora_A, lora_B, ...} of ``adapter``, in the base's module order."""
        out = {}
        for path, layer in self._layers:
            parts = {attr: getattr(layer, attr)[adapter] for attr in layer.adapter_layer_names
                     if isinstance(getattr(layer, attr), nn.ModuleDict) and adapter in getattr(layer, attr)}
            if parts:
                out[path.replace(".", "/")] = nn.ModuleDict(parts)  # "." is refused in module names
        return out

    @torch.no_grad()
    def copy_adapter(self, source: str, target: str) -> None:
        """target's weights ← source's (the EMA starts as the student, as a deepcopy would)."""
        for p, q in zip(self.view(target).parameters(), self.view(source).parameters(), strict=True):
            p.copy_(q)

    def run(self, adapter: str | None, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The base's forward with ``adapter`` active (see the class docstring for what stays active)."""
        previous = self._active
        self._activate(adapter)
        try:
            return self.model(*args, **kwargs)
        finally:
            if not torch.is_grad_enabled():
                self._activate(previous)

    def _activate(self, adapter: str | None) -> None:
        """Point every LoRA layer at ``adapter`` (None: adapters off).

        peft's own ``set_adapter``/``enable_adapters`` also set requires_grad (the active adapter
        trainable, the others frozen), which would freeze F while G trains; the two attributes its
        layers' forward reads are set here instead (peft pinned to 0.21 in pyproject.toml).
        """
        if adapter == self._active:
            return
        for _, layer in self._layers:
            layer._disable_adapters = adapter is None
            if adapter is not None:
                layer._active_adapter = adapter
        self._active = adapter


class AdapterView(nn.Module):
    """The host's base run with one adapter active: the model contract, the adapter's parameters only."""

    def __init__(self, host: LoraHost, adapter: str | None):
        super().__init__()
        # a plain attribute, not a submodule: parameters(), requires_grad_(), train() and to() see only
        # this view's adapter (Teacher.__post_init__ freezes what it is given, the optimiser steps what
        # it is given)
        self.__dict__["host"] = host
        self.adapter = adapter
        self.lora = nn.ModuleDict(host.adapter_modules(adapter) if adapter is not None else {})

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
                source: torch.Tensor | None = None) -> torch.Tensor:
        return self.host.run(self.adapter, z_t, t, text, text_mask, source)

    def extra_repr(self) -> str:
        return f"adapter={self.adapter!r}, base={type(self.host.model).__name__}"


def merged_student(state_or_model: Any) -> nn.Module:
    """A standalone plain model: a copy of the base with the student's adapter merged in.

    Takes a DMD state (its EMA when there is one, else the student: the model the benchmark scores,
    DESIGN §7), an :class:`AdapterView`, or a full-mode model (copied as it is). The copy's weights
    are its own (the run's base is untouched); it is frozen, in eval mode, with gradient checkpointing
    off, and saves with ``save_pretrained`` as the base's class does (``trainers.checkpoint.save_model``).
    """
    model = state_or_model
    if hasattr(model, "student") and hasattr(model, "ema"):  # a DMDState (not imported: dmd imports this module)
        model = model.ema if model.ema is not None else model.student
    if not isinstance(model, AdapterView):
        merged = copy.deepcopy(model)
    elif model.adapter is None:
        merged = copy.deepcopy(model.host.peft).unload()
    else:
        merged = copy.deepcopy(model.host.peft).merge_and_unload(adapter_names=[model.adapter])
    for module in merged.modules():
        if getattr(module, "gradient_checkpointing", False) and hasattr(module, "disable_gradient_checkpointing"):
            module.disable_gradient_checkpointing()
    return merged.requires_grad_(False).eval()
