"""Fixed-seed benchmark (DESIGN §7): every model sees the same prompts and the same noise.

Common random numbers make two trials' scores differ by their recipes, not by their luck: the
held-out items, the initial noise of every item and the fresh noise of every student re-noising
step are all fixed by ``EvalConfig.seed``. Each item's noise comes from its own seed (derived from
the benchmark seed, the item's kind, row and sample index), so a small benchmark is an exact prefix
of a large one: the cheap intermediate evaluation scores the first items of the full one.

A *generator* is any function ``(eps, cond, renoise) -> x0`` — a teacher's Euler sampler with CFG,
a DMD student's :class:`~trainers.sampling.StudentScheduler` — so teachers and students are
scored by the same code.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from trainers.cond import Cond, guided_velocity
from trainers.sampling import StudentScheduler, euler_sample, timesteps
from trainers.world import World

Renoise = Callable[[int], torch.Tensor]
Generate = Callable[[torch.Tensor, Cond, Renoise], torch.Tensor]
"""``generate(eps, cond, renoise) -> x0`` on CPU tensors; ``renoise(k)`` is the fresh noise of re-noising step k."""

T2I, EDIT = 0, 1  # item kinds, part of every item's noise seed


@dataclass(frozen=True)
class EvalConfig:
    """Size and seed of the benchmark. ``items`` images in all: half T2I, half edits."""

    items: int = 1024  # ≥ 1,000 keeps the standard error of a mean accuracy ≈ 0.005 (DESIGN §7)
    samples_per_prompt: int = 4  # K samples per prompt: diversity needs K ≥ 2
    seed: int = 0
    batch_size: int = 256


def item_noise(seed: int, keys: list[tuple[int, ...]], step: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise [len(keys), *shape]: item ``key``'s draw for ``step`` (0 = initial, k + 1 = k-th re-noising).

    One generator per item, seeded through numpy's SeedSequence (well-mixed, collision-free seeds),
    so an item's noise does not depend on which other items are in the benchmark.
    """
    out = torch.empty(len(keys), *shape)
    gen = torch.Generator()
    for i, key in enumerate(keys):
        gen.manual_seed(int(np.random.SeedSequence([seed, step, *key]).generate_state(1)[0]))
        out[i] = torch.randn(shape, generator=gen)
    return out


@dataclass
class EvalSet:
    """The benchmark's items with their fixed conditions and noise (all on CPU)."""

    t2i_rows: list[dict]
    edit_rows: list[dict]
    cond: Cond  # T2I items (each prompt repeated K times, row-major) then edit items
    keys: list[tuple[int, int, int]]  # (kind, row, sample) of every item: its noise identity
    seed: int
    samples_per_prompt: int
    image_shape: tuple[int, int, int]
    eps: torch.Tensor = field(init=False)  # [N, 3, H, W] initial noise
    _renoise: dict[int, torch.Tensor] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.eps = item_noise(self.seed, self.keys, 0, self.image_shape)

    def __len__(self) -> int:
        return len(self.keys)

    def renoise(self, k: int, index: torch.Tensor) -> torch.Tensor:
        """Fresh noise of re-noising step ``k`` for the items ``index`` (drawn once per k, then cached)."""
        if k not in self._renoise:
            self._renoise[k] = item_noise(self.seed, self.keys, k + 1, self.image_shape)
        return self._renoise[k][index]


def build_eval_set(world: World, config: EvalConfig) -> EvalSet:
    """Held-out prompts and edits: the first rows of the pools, so a small benchmark is a prefix of a large one.

    At least one prompt per category and one edit per edit type (the pools are round-robin ordered).
    """
    k = config.samples_per_prompt
    n_prompts = max(len(world.categories), config.items // (2 * k))
    n_edits = max(len(world.edit_types), config.items - n_prompts * k)
    prompts, edits = world.prompt_pool("heldout"), world.edit_pool("heldout")
    if n_prompts > len(prompts) or n_edits > len(edits):
        raise ValueError(
            f"eval items={config.items}: needs {n_prompts} held-out prompts and {n_edits} edits, "
            f"the world has {len(prompts)} and {len(edits)}"
        )
    t2i_rows = prompts.slice(0, n_prompts).to_pylist()
    edit_rows = edits.slice(0, n_edits).to_pylist()
    cond = Cond.concat([world.t2i_cond([r for r in t2i_rows for _ in range(k)]), world.edit_cond(edit_rows)])
    keys = [(T2I, i, j) for i in range(n_prompts) for j in range(k)] + [(EDIT, i, 0) for i in range(n_edits)]
    return EvalSet(t2i_rows, edit_rows, cond, keys, config.seed, k, tuple(world.image_shape))


@lru_cache(maxsize=4)
def cached_eval_set(world: World, config: EvalConfig) -> EvalSet:
    """Encoding and rendering the benchmark costs seconds: build it once per (world, config) per process."""
    return build_eval_set(world, config)


@torch.no_grad()
def generate_all(
    generate: Generate, es: EvalSet, batch_size: int = 256, to_pixels: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> tuple[torch.Tensor, float]:
    """Every benchmark image ([-1, 1], CPU) and the generation wall time in seconds (decoding excluded).

    ``to_pixels`` is the world's (latents -> pixels; the tiny world clamps); None clamps.
    """
    to_pixels = to_pixels or (lambda x: x.clamp(-1, 1))
    gen_s, images = 0.0, []
    for lo in range(0, len(es), batch_size):
        index = torch.arange(lo, min(lo + batch_size, len(es)))
        renoise = lambda k, index=index: es.renoise(k, index)  # noqa: E731
        start = time.perf_counter()
        samples = generate(es.eps[index], es.cond.select(index), renoise).float().cpu()
        gen_s += time.perf_counter() - start
        images.append(to_pixels(samples).float().clamp(-1, 1))
    return torch.cat(images), gen_s


def _score_se(t2i: dict[str, float], edit: dict[str, float]) -> dict[str, float]:
    """``score_se`` when the world reports both SEs: the T2I and edit items are drawn independently,
    so the variances of the two halves of ``score`` add."""
    if "t2i_score_se" not in t2i or "edit_score_se" not in edit:
        return {}
    return {"score_se": math.hypot(t2i["t2i_score_se"], edit["edit_score_se"]) / 2}


def evaluate(
    world: World, generate: Generate, config: EvalConfig | EvalSet = EvalConfig()
) -> dict[str, float]:
    """Generate every benchmark item with ``generate`` and score it with the world's judge.

    Returns the world's T2I and edit metrics (overall, per category, per edit type), ``score``
    (the mean of ``t2i_score`` and ``edit_score``), ``samples_per_s`` (generation only) and ``eval_s``.
    """
    es = config if isinstance(config, EvalSet) else cached_eval_set(world, config)
    batch = config.batch_size if isinstance(config, EvalConfig) else EvalConfig.batch_size
    start = time.perf_counter()
    images, gen_s = generate_all(generate, es, batch, world.to_pixels)
    n_t2i = len(es.t2i_rows) * es.samples_per_prompt
    t2i = world.score_t2i(images[:n_t2i], es.t2i_rows, es.samples_per_prompt)
    edit = world.score_edits(images[n_t2i:], es.edit_rows)
    return {
        **t2i,
        **edit,
        "score": (t2i["t2i_score"] + edit["edit_score"]) / 2,
        **_score_se(t2i, edit),
        "samples_per_s": len(images) / gen_s,
        "eval_s": time.perf_counter() - start,
    }


def _on_device(model: nn.Module, sample: Callable[[torch.Tensor, Cond, Renoise], torch.Tensor]) -> Generate:
    """Run ``sample`` on the model's device with CPU inputs and outputs (the benchmark lives on CPU)."""
    device = next(model.parameters()).device

    def generate(eps: torch.Tensor, cond: Cond, renoise: Renoise) -> torch.Tensor:
        if device.type == "cpu":
            return sample(eps, cond, renoise)
        return sample(eps.to(device), cond.to(device), lambda k: renoise(k).to(device)).cpu()

    return generate


def teacher_generator(model: nn.Module, nfe: int, guidance_scale: float, shift: float = 1.0,
                      cfg: str = "plain") -> Generate:
    """Euler ODE sampler with ``nfe`` steps and CFG (2 model calls per step unless the scale is 1)."""
    ts = timesteps(nfe, shift)

    def sample(eps: torch.Tensor, cond: Cond, renoise: Renoise) -> torch.Tensor:
        return euler_sample(lambda z, t: guided_velocity(model, z, t, cond, guidance_scale, cfg), eps, ts)

    return _on_device(model, sample)


def student_generator(model: nn.Module, scheduler: StudentScheduler) -> Generate:
    """The student's few-step sampler, re-noising with the benchmark's fixed fresh noise; no CFG."""

    def sample(eps: torch.Tensor, cond: Cond, renoise: Renoise) -> torch.Tensor:
        return scheduler.sample(model, cond, eps, lambda k, idx: renoise(k)[idx])

    return _on_device(model, sample)


def evaluate_teacher(
    world: World,
    model: nn.Module,
    nfe: int,
    config: EvalConfig | EvalSet = EvalConfig(),
    guidance_scale: float = 3.0,
    shift: float = 1.0,
) -> dict[str, float]:
    """Scores of a teacher sampled with ``nfe`` Euler steps and CFG ``guidance_scale``."""
    return evaluate(world, teacher_generator(model, nfe, guidance_scale, shift), config)


@torch.no_grad()
def ms_per_sample(generate: Generate, es: EvalSet, items: int = 64, repeats: int = 3) -> float:
    """Sampling speed: median wall milliseconds per sample of ``generate`` on the first ``items`` benchmark
    items, one batch per call, after a warm-up call (first calls allocate and pick kernels)."""
    index = torch.arange(min(items, len(es)))
    eps, cond = es.eps[index], es.cond.select(index)

    def once() -> float:
        start = time.perf_counter()
        generate(eps, cond, lambda k: es.renoise(k, index))  # returns CPU tensors: a GPU run is synchronised
        return time.perf_counter() - start

    once()
    return 1e3 * statistics.median(once() for _ in range(repeats)) / len(index)
