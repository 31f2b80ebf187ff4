"""Instrumented stand-ins for the Cond and teacher tests (test_cond.py, test_teachers.py).

Item i carries its id in ``text[:, 0, 0]`` and a conditional signal in ``text[:, 0, 1]``, so a
recording model with the FlowModel call signature can say which items each call saw.
"""

import torch
from torch import nn

from trainers.cond import Cond

SHAPE = (3, 4, 4)


class RecordingFlow(nn.Module):
    """Predicts x0 = offset + text[:, 0, 1] (+ the source) exactly and records the item ids of each call."""

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.offset = nn.Parameter(torch.tensor(offset))
        self.calls: list[tuple[list[int], bool]] = []  # (item ids, called with a source image)

    def forward(self, z_t, t, text, text_mask, source=None):
        self.calls.append(([int(i) for i in text[:, 0, 0].tolist()], source is not None))
        x0 = self.offset + text[:, 0, 1].reshape(-1, 1, 1, 1) + (0 if source is None else source)
        return (z_t - x0) / t.reshape(-1, 1, 1, 1)  # so that x0_from_v gives x0 back

    def items(self) -> set[int]:
        return {i for ids, _ in self.calls for i in ids}


def make_cond(categories, edit=None, signal=0.5) -> Cond:
    """Item i carries id i and the conditional signal; the null prompt carries the id and signal 0."""
    n = len(categories)
    text = torch.zeros(n, 2, 4)
    text[:, 0, 0] = torch.arange(n, dtype=torch.float32)
    text[:, 0, 1] = signal
    null = torch.zeros_like(text)
    null[:, 0, 0] = text[:, 0, 0]  # the id travels in the unconditional branch too (instrumentation only)
    mask = torch.ones(n, 2, dtype=torch.long)
    is_edit = None if edit is None else torch.tensor(edit)
    source = None if edit is None else torch.full((n, *SHAPE), 10.0) * is_edit.reshape(-1, 1, 1, 1)
    return Cond(text, mask, null, mask.clone(), tuple(categories), source, is_edit)
