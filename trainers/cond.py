"""Batch conditions and the velocity of a model under them (with or without CFG).

Conditions travel as a :class:`Cond`: one batch whose items may be text-to-image or edits. The
model contract is one kind per call, so :func:`velocity` splits a mixed batch into its T2I and
edit sub-batches and scatters the results back; :func:`guided_velocity` adds classifier-free
guidance on top. Every sampler, loss and teacher calls a model through these two functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainers import flow

EDIT = "edit"
"""A specialist covering this category guides every edit item (trainers.teachers.Teacher.covers); it
is also the category of edit items whose source has none (a real world's edit manifest)."""


@dataclass(frozen=True)
class Cond:
    """Per-item conditions of a batch of B items (text-to-image, edits, or both).

    ``null_text``/``null_mask`` hold the empty prompt "" (the unconditional CFG branch), expanded
    to B rows. ``source`` is the edit source image for edit items (rows of T2I items are ignored),
    or None when no item is an edit. ``categories`` name each item's category (an edit's: its source
image's category, or "edit" when the world has none); ``is_edit`` tells the two kinds apart.
    """

    text: torch.Tensor  # [B, L, D]
    text_mask: torch.Tensor  # [B, L]
    null_text: torch.Tensor  # [B, L, D]
    null_mask: torch.Tensor  # [B, L]
    categories: tuple[str, ...]
    source: torch.Tensor | None = None  # [B, 3, H, W]
    is_edit: torch.Tensor | None = None  # [B] bool; None = no edits

    def __post_init__(self) -> None:
        n = self.text.shape[0]
        assert len(self.categories) == n, f"{len(self.categories)} categories for {n} items"
        assert (self.source is None) == (self.is_edit is None), "source and is_edit come together"

    def __len__(self) -> int:
        return self.text.shape[0]

    def select(self, idx: torch.Tensor) -> Cond:
        """The sub-batch of the items at positions ``idx`` (a 1-d long tensor)."""
        pick = idx.tolist()
        return Cond(
            text=self.text[idx],
            text_mask=self.text_mask[idx],
            null_text=self.null_text[idx],
            null_mask=self.null_mask[idx],
            categories=tuple(self.categories[i] for i in pick),
            source=None if self.source is None else self.source[idx],
            is_edit=None if self.is_edit is None else self.is_edit[idx],
        )

    def to(self, device: torch.device | str) -> Cond:
        """The same conditions with every tensor on ``device`` (categories stay a tuple)."""
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return Cond(
            move(self.text), move(self.text_mask), move(self.null_text), move(self.null_mask),
            self.categories, move(self.source), move(self.is_edit),
        )

    @staticmethod
    def concat(parts: Sequence[Cond]) -> Cond:
        """Join sub-batches (e.g. the T2I part and the edit part of a data batch) into one Cond."""
        parts = [p for p in parts if len(p) > 0]
        assert parts, "nothing to concatenate"
        if all(p.source is None for p in parts):
            source = is_edit = None
        else:
            like = next(p.source for p in parts if p.source is not None)
            source = torch.cat(
                [p.source if p.source is not None else like.new_zeros(len(p), *like.shape[1:]) for p in parts]
            )
            is_edit = torch.cat(
                [
                    p.is_edit
                    if p.is_edit is not None
                    else torch.zeros(len(p), dtype=torch.bool, device=p.text.device)
                    for p in parts
                ]
            )
        return Cond(
            text=_cat_padded([p.text for p in parts]),
            text_mask=_cat_padded([p.text_mask for p in parts]),
            null_text=_cat_padded([p.null_text for p in parts]),
            null_mask=_cat_padded([p.null_mask for p in parts]),
            categories=tuple(c for p in parts for c in p.categories),
            source=source,
            is_edit=is_edit,
        )


def _cat_padded(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate text tensors [n, L_i, ...] along the batch, zero-padding L to the longest.

    Fixed-length encoders (the tiny world's) never pad; a real world's texts vary in length, and a
    zero-padded token has mask 0, so the transformer's masked attention ignores it.
    """
    length = max(p.shape[1] for p in parts)
    if all(p.shape[1] == length for p in parts):
        return torch.cat(parts)
    widths = lambda p: [0, 0] * (p.dim() - 2) + [0, length - p.shape[1]]  # noqa: E731  (pad dim 1 only)
    return torch.cat([torch.nn.functional.pad(p, widths(p)) for p in parts])


def velocity(
    model: nn.Module, z_t: torch.Tensor, t: torch.Tensor, cond: Cond, unconditional: bool = False
) -> torch.Tensor:
    """v = model(z_t, t, text, mask, source), calling the model once per kind (T2I / edit).

    ``unconditional`` uses the empty prompt; an edit keeps its source image then, so CFG guides
    the instruction only (Qwen-Image-Edit's convention).
    """
    text, mask = (cond.null_text, cond.null_mask) if unconditional else (cond.text, cond.text_mask)
    if cond.is_edit is None or not bool(cond.is_edit.any()):
        return model(z_t, t, text, mask, None)
    if bool(cond.is_edit.all()):
        return model(z_t, t, text, mask, cond.source)
    edit = cond.is_edit.nonzero().squeeze(1)
    t2i = (~cond.is_edit).nonzero().squeeze(1)
    v_t2i = model(z_t[t2i], t[t2i], text[t2i], mask[t2i], None)
    v_edit = model(z_t[edit], t[edit], text[edit], mask[edit], cond.source[edit])
    order = torch.cat([t2i, edit])
    # cat + inverse permutation keeps autograd simple (no in-place writes)
    return torch.cat([v_t2i, v_edit])[torch.argsort(order)]


def guided_velocity(
    model: nn.Module, z_t: torch.Tensor, t: torch.Tensor, cond: Cond, guidance_scale: float,
    cfg: str = "plain",
) -> torch.Tensor:
    """The CFG velocity ``flow.cfg(v_cond, v_uncond, scale)``; scale 1 is one conditional call.

    ``cfg="norm_rescaled"`` is Qwen-Image's true CFG (:func:`trainers.flow.cfg_norm_rescaled`).
    The one place teachers are guided: the real score of DMD and the teachers' Euler sampler.
    """
    v = velocity(model, z_t, t, cond)
    if guidance_scale != 1.0:
        v_uncond = velocity(model, z_t, t, cond, unconditional=True)
        if cfg == "plain":
            v = flow.cfg(v, v_uncond, guidance_scale)
        elif cfg == "norm_rescaled":
            v = flow.cfg_norm_rescaled(v, v_uncond, guidance_scale)
        else:
            raise ValueError(f"cfg must be 'plain' or 'norm_rescaled', got {cfg!r}")
    return v
