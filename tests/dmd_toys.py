"""Toy flow models and batches for the DMD tests (test_dmd.py, test_dmd_loss.py, test_divergence.py).

Toy flow models with the FlowModel call signature stand in for the tiny world's transformers.
"""

import torch
from torch import nn

from trainers.cond import Cond
from trainers.dmd import DMDConfig, DMDState
from trainers.teachers import Teacher, TeacherSet, teacher_schedule

SHAPE = (3, 4, 4)


class ConstantX0(nn.Module):
    """A flow model whose x0 prediction is the constant ``value`` (v = (z_t − value) / t)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = nn.Parameter(value.clone())

    def forward(self, z_t, t, text, text_mask, source=None):
        return (z_t - self.value) / t.reshape(-1, 1, 1, 1)


class ToyFlow(nn.Module):
    """A trainable velocity model: 1×1 conv of z_t plus text and time embeddings (and the source)."""

    def __init__(self, text_dim: int = 4):
        super().__init__()
        self.mix = nn.Conv2d(3, 3, 1)
        self.text = nn.Linear(text_dim, 3)
        self.time = nn.Linear(1, 3)
        self.src = nn.Conv2d(3, 3, 1)
        self.t_seen: list[tuple[list[float], bool]] = []  # (t values, grad enabled) per call

    def forward(self, z_t, t, text, text_mask, source=None):
        self.t_seen.append((t.tolist(), torch.is_grad_enabled()))
        pooled = (text * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True).clamp(min=1)
        h = self.mix(z_t) + (self.text(pooled) + self.time(t[:, None]))[:, :, None, None]
        return h if source is None else h + self.src(source)


def make_cond(n: int, categories=None, edits: int = 0, shape=SHAPE) -> Cond:
    g = torch.Generator().manual_seed(n)
    text = torch.randn(n, 3, 4, generator=g)
    mask = torch.ones(n, 3, dtype=torch.long)
    cats = tuple(categories or ["text", "landscape"] * (n // 2) + ["portrait"] * (n % 2))
    is_edit = torch.arange(n) >= n - edits if edits else None
    source = torch.randn(n, *shape, generator=g) if edits else None
    return Cond(text, mask, torch.zeros_like(text), mask.clone(), cats, source, is_edit)


def toy_state(critic_updates=2, seed=0, **config) -> DMDState:
    torch.manual_seed(0)
    teachers = TeacherSet.of(
        Teacher("base", ToyFlow()), Teacher("text", ToyFlow(), categories=frozenset({"text"}))
    )
    cfg = DMDConfig(nfe=4, critic_updates=critic_updates, image_shape=SHAPE, **({"warmup_steps": 2} | config))
    return DMDState.from_base(teachers, teacher_schedule(teachers, nfe=4, switch_step=2), cfg, seed=seed)
