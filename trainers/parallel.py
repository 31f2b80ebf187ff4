"""Data parallelism for ``distill``: which rows of the global batch this process trains on, and
the gradient average across processes (plain ``torch.distributed``; no Ray here).

    shard = Shard.current()            # rank 0 of 1 unless torch.distributed is initialised
    rows = shard.rows(batch_size)      # this process's rows of the global batch
    shard.average_gradients(model)     # before the optimiser step

One process (a notebook, a one-worker trial) is rank 0 of 1 and every method is the identity, so a
run is bit-for-bit what it was before data parallelism existed.

With several processes (the process group set up by Ray Train's TorchTrainer, or torchrun), every
process holds the same models and seeds, so each draws the *same* global batch and the *same*
random numbers, and keeps only its own rows. After backward the gradients are averaged; since each
loss is a mean over the process's rows and the shards are equal in size, the average is the
gradient of the global batch's mean loss: the update equals the one-process update on the global
batch (up to float summation order), and every process keeps identical weights, EMA included.
Drawing the global random numbers costs a few microseconds; the models only run on the own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Shard:
    """This process's place in a data-parallel run: ``rank`` of ``world`` equal shards."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        """The initialised process group's rank and size; rank 0 of 1 without one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, reports and writes checkpoints."""
        return self.rank == 0

    def local(self, n_global: int) -> int:
        """Rows per process of a global batch of ``n_global`` (which must divide evenly)."""
        if n_global % self.world:
            raise ValueError(f"a batch of {n_global} does not split evenly over {self.world} processes")
        return n_global // self.world

    def rows(self, n_global: int) -> slice:
        """This process's rows of a global batch of ``n_global``."""
        n = self.local(n_global)
        return slice(self.rank * n, (self.rank + 1) * n)

    # -- random numbers: drawn for the global batch, kept for the own rows -------------------------

    def randn(self, n: int, item_shape: Sequence[int], generator, device=None, dtype=None) -> torch.Tensor:
        """Standard normals for this process's ``n`` rows, as the global draw of ``n · world`` rows has them."""
        draw = torch.randn((n * self.world, *item_shape), generator=generator, device=device, dtype=dtype)
        return draw[self.rows(n * self.world)]

    def rand(self, n: int, generator, device=None, dtype=None) -> torch.Tensor:
        """U[0, 1) for this process's ``n`` rows (see :meth:`randn`)."""
        return torch.rand(n * self.world, generator=generator, device=device, dtype=dtype)[self.rows(n * self.world)]

    # -- collectives ------------------------------------------------------------------------------

    def average_gradients(self, model: nn.Module) -> None:
        """Replace every gradient by its mean over the processes (one all-reduce of a flat buffer)."""
        if self.world == 1:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (metrics, a stop decision); the value itself with one process."""
        if self.world == 1:
            return value
        payload = [value if self.is_main else None]
        dist.broadcast_object_list(payload, src=0)  # in memory between the ranks of one run
        return payload[0]


ONE_PROCESS = Shard()
"""Rank 0 of 1: the default everywhere a shard is optional (a notebook, a one-worker trial)."""
