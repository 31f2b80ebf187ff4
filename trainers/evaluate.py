"""Fixed-seed benchmark (DESIGN §7): every model sees the same prompts and the same noise.

Common random numbers make two trials' scores differ by their recipes, not by their luck: the
held-out items, the initial noise of every item and the fresh noise of every student re-noising
step are all drawn from ``EvalConfig.seed``. A *generator* is any function
``(eps, cond, renoise) -> x0`` — a teacher's Euler sampler with CFG, a DMD student's few-step
sampler — so teachers and students are scored by the same code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from trainers import flow
from trainers.teachers import Cond, velocity
from trainers.world import World

Generate = Callable[[torch.Tensor, Cond, Callable[[int], torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class EvalConfig:
    """Size and seed of the benchmark. ``items`` images in all: half T2I, half edits."""

    items: int = 1024  # ≥ 1,000 keeps the standard error of a mean accuracy ≈ 0.005 (DESIGN §7)
    samples_per_prompt: int = 4  # K samples per prompt: diversity needs K ≥ 2
    seed: int = 0
    batch_size: int = 256


@dataclass
class EvalSet:
    """The benchmark's items with their fixed conditions and noise."""

    t2i_rows: list[dict]
    edit_rows: list[dict]
    cond: Cond  # T2I items (each prompt repeated K times, row-major) then edit items
    eps: torch.Tensor  # [N, 3, H, W] initial noise
    seed: int
    samples_per_prompt: int

    def renoise(self, k: int, index: torch.Tensor) -> torch.Tensor:
        """Fresh noise of re-noising step ``k`` for the items ``index`` (deterministic per item)."""
        gen = torch.Generator().manual_seed(self.seed * 1000 + 17 + k)
        noise = torch.randn(self.eps.shape, generator=gen)
        return noise[index]


def build_eval_set(world: World, config: EvalConfig) -> EvalSet:
    """Held-out prompts and edits, first rows of the pools (so a small benchmark is a prefix of a large one)."""
    k = config.samples_per_prompt
    n_t2i_rows = max(len(world.categories), (config.items // 2) // k)
    n_edit = max(len(world.edit_types), config.items - n_t2i_rows * k)
    prompts, edits = world.prompt_pool("heldout"), world.edit_pool("heldout")
    if n_t2i_rows > len(prompts) or n_edit > len(edits):
        raise ValueError(f"eval items: the held-out pools hold {len(prompts)} prompts and {len(edits)} edits, "
                         f"{n_t2i_rows} prompts and {n_edit} edits were asked for")
    t2i_rows = prompts.slice(0, n_t2i_rows).to_pylist()
    edit_rows = edits.slice(0, n_edit).to_pylist()
    repeated = [r for r in t2i_rows for _ in range(k)]
    cond = Cond.concat([world.t2i_cond(repeated), world.edit_cond(edit_rows)])
    gen = torch.Generator().manual_seed(config.seed)
    eps = torch.randn(len(cond), 3, world.resolution, world.resolution, generator=gen)
    return EvalSet(t2i_rows, edit_rows, cond, eps, config.seed, k)


@lru_cache(maxsize=4)
def _cached_eval_set(world: World, config: EvalConfig) -> EvalSet:
    return build_eval_set(world, config)


@torch.no_grad()
def evaluate(world: World, generate: Generate, config: EvalConfig | EvalSet = EvalConfig()) -> dict[str, float]:
    """Generate every benchmark item with ``generate`` and score it with the world's judge.

    Returns the world's T2I and edit metrics, ``score`` (their mean), ``samples_per_s`` and ``eval_s``.
    """
    es = config if isinstance(config, EvalSet) else _cached_eval_set(world, config)
    batch = config.batch_size if isinstance(config, EvalConfig) else 256
    start, images = time.perf_counter(), []
    for lo in range(0, len(es.cond), batch):
        index = torch.arange(lo, min(lo + batch, len(es.cond)))
        cond = es.cond.select(index)
        images.append(generate(es.eps[index], cond, lambda k, index=index: es.renoise(k, index)).clamp(-1, 1))
    images = torch.cat(images)
    wall = time.perf_counter() - start
    n_t2i = len(es.t2i_rows) * es.samples_per_prompt
    t2i = world.score_t2i(images[:n_t2i], es.t2i_rows, es.samples_per_prompt)
    edit = world.score_edits(images[n_t2i:], es.edit_rows)
    return {**t2i, **edit, "score": (t2i["t2i_score"] + edit["edit_score"]) / 2,
            "samples_per_s": len(images) / wall, "eval_s": wall}


def teacher_generator(model: nn.Module, nfe: int, guidance_scale: float, shift: float = 1.0) -> Generate:
    """Euler ODE sampler with ``nfe`` steps and CFG (2 model calls per step unless the scale is 1)."""

    def v(z: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        out = velocity(model, z, t, cond)
        if guidance_scale != 1.0:
            out = flow.cfg(out, velocity(model, z, t, cond, unconditional=True), guidance_scale)
        return out

    def generate(eps: torch.Tensor, cond: Cond, renoise) -> torch.Tensor:
        return flow.euler_sample(lambda z, t: v(z, t, cond), eps, flow.timesteps(nfe, shift))

    return generate


def student_generator(model: nn.Module, nfe: int, shift: float = 1.0) -> Generate:
    """DMD2's few-step sampler (predict x0, re-noise with the benchmark's fixed fresh noise)."""

    def generate(eps: torch.Tensor, cond: Cond, renoise) -> torch.Tensor:
        return flow.student_sample(lambda z, t: velocity(model, z, t, cond), eps, flow.timesteps(nfe, shift), renoise)

    return generate


def evaluate_teacher(world: World, model: nn.Module, nfe: int, config: EvalConfig = EvalConfig(),
                     guidance_scale: float = 3.0, shift: float = 1.0) -> dict[str, float]:
    """Scores of a teacher sampled with ``nfe`` Euler steps and CFG ``guidance_scale``."""
    return evaluate(world, teacher_generator(model, nfe, guidance_scale, shift), config)
