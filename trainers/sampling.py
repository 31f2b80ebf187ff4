"""Samplers kept apart from the models, as diffusers keeps its flow-match scheduler.

:class:`StudentScheduler` is the student's few-step sampler (DMD2): its timesteps for
``(nfe, timestep_shift)``, the sampling run used by the benchmark, the sample grid and promotion,
and the backward simulation of DMD training. Both are one loop (:meth:`StudentScheduler.simulate`),
so training and evaluation cannot drift apart. :func:`euler_sample` is the teachers' ODE sampler.

    scheduler = StudentScheduler.from_recipe(recipe)      # nfe, timestep_shift
    x0 = scheduler.sample(model, cond, eps, noise)        # noise(k, idx): fresh noise of re-noising k
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainers import flow
from trainers.cond import Cond, velocity
from trainers.parallel import Shard

Noise = Callable[[int, torch.Tensor], torch.Tensor]
"""``noise(k, idx)``: the fresh noise of the k-th re-noising for the items at positions ``idx`` [n]."""


def timesteps(n: int, shift: float = 1.0) -> list[float]:
    """The ``n`` start times of an n-step sampler, from 1 down to 1/n (then 0 is the end).

    ``timesteps(4) == [1.0, 0.75, 0.5, 0.25]``: the student's default schedule (DESIGN §6);
    ``shift`` bends them with SD3's :func:`trainers.flow.shift_time`.
    """
    assert n >= 1, f"need at least one step, got {n}"
    return [float(flow.shift_time(1 - i / n, shift)) for i in range(n)]


def gaussian(eps: torch.Tensor, generator: torch.Generator | None = None) -> Noise:
    """Fresh standard normal noise shaped like ``eps``'s items, drawn from ``generator`` on demand.

    Only the items being re-noised draw, in step order: DMD training's random stream.
    """
    return lambda k, idx: torch.randn(
        (len(idx), *eps.shape[1:]), generator=generator, device=eps.device, dtype=eps.dtype
    )


def sharded_gaussian(eps: torch.Tensor, ks_global: torch.Tensor, shard: Shard, generator=None) -> Noise:
    """:func:`gaussian` for one process's rows of a data-parallel batch (``trainers/parallel.py``).

    The global batch's noise is drawn in the order one process would draw it (at step j, for every
    item still running, ``ks_global > j``), so every rank's stream stays in step and each keeps its
    own items' rows. Drawn up front: a rank whose own items stop early must still draw the later steps.
    """
    if shard.world == 1:
        return gaussian(eps, generator)
    rows, per_step = shard.rows(len(ks_global)), []
    for j in range(int(ks_global.max()) if len(ks_global) else 0):
        running = ks_global > j
        full = eps.new_zeros((len(ks_global), *eps.shape[1:]))
        full[running] = torch.randn(
            (int(running.sum()), *eps.shape[1:]), generator=generator, device=eps.device, dtype=eps.dtype
        )
        per_step.append(full[rows])
    return lambda k, idx: per_step[k][idx]


@dataclass(frozen=True)
class StudentScheduler:
    """DMD2's few-step sampler: at each t_k predict x0, then re-noise it to t_{k+1} with fresh noise."""

    nfe: int = 4
    shift: float = 1.0  # the Recipe's timestep_shift

    @classmethod
    def from_recipe(cls, recipe) -> StudentScheduler:
        """The sampler a Recipe trains and is scored with (its nfe and timestep_shift)."""
        return cls(recipe.nfe, recipe.timestep_shift)

    @property
    def timesteps(self) -> list[float]:
        return timesteps(self.nfe, self.shift)

    def sample_steps(self, n: int, generator=None, device=None) -> torch.Tensor:
        """One student step k ~ U{0..nfe−1} per item (what DMD trains each item's sample at)."""
        return torch.randint(0, self.nfe, (n,), generator=generator, device=device)

    def simulate(
        self, model: nn.Module, cond: Cond, eps: torch.Tensor, ks: torch.Tensor, noise: Noise
    ) -> torch.Tensor:
        """Item i's x0 prediction at step ``ks[i]`` of the sampler started from ``eps[i]``.

        Steps before k_i run without gradients; the last one runs under the caller's grad mode
        (DMD2's backward simulation: gradients through the final step only). Items still running
        at step j are the only ones evaluated, and re-noised with ``noise(j, idx)``.
        """
        t_list = torch.tensor(self.timesteps, device=eps.device, dtype=eps.dtype)
        z = eps.detach().clone()
        with torch.no_grad():
            for j in range(int(ks.max()) if len(ks) else 0):
                idx = (ks > j).nonzero().squeeze(1)
                t = t_list[j].expand(len(idx))
                x0 = flow.x0_from_v(z[idx], t, velocity(model, z[idx], t, cond.select(idx)))
                z[idx] = flow.interpolate(x0, noise(j, idx), t_list[j + 1].expand(len(idx)))
        t_k = t_list[ks]
        return flow.x0_from_v(z, t_k, velocity(model, z, t_k, cond))

    def sample(self, model: nn.Module, cond: Cond, eps: torch.Tensor, noise: Noise) -> torch.Tensor:
        """The full ``nfe``-step sample x0 of every item (no CFG: the student is distilled with it)."""
        ks = torch.full((len(eps),), self.nfe - 1, dtype=torch.long, device=eps.device)
        return self.simulate(model, cond, eps, ks, noise)

    def backward_simulate(
        self,
        model: nn.Module,
        cond: Cond,
        eps: torch.Tensor,
        ks: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """DMD training's samples: :meth:`simulate` with fresh noise drawn from ``generator``."""
        return self.simulate(model, cond, eps, ks, gaussian(eps, generator))


@torch.no_grad()
def euler_sample(velocity_fn: flow.VelocityFn, eps: torch.Tensor, ts: Sequence[float]) -> torch.Tensor:
    """Deterministic Euler ODE solve from t = ts[0] (noise ``eps``) to t = 0: the teachers' sampler.

    ``z_{t'} = z_t + (t' - t) v``; with ``ts = timesteps(n)`` and a CFG velocity
    (:func:`trainers.cond.guided_velocity`) this is the n-NFE teacher sampler.
    """
    z = eps
    ends = list(ts[1:]) + [0.0]
    for t, t_next in zip(ts, ends, strict=True):
        tt = torch.full((z.shape[0],), t, device=z.device)
        z = z + (t_next - t) * velocity_fn(z, tt)
    return z
