"""The sample grid: a PNG of a student's samples on the first benchmark items.

    sample_grid(world, student, recipe, out)   # T2I rows, then (source, edit) pairs, 8 tiles a row

A trial writes one next to its final checkpoint (``samples.png``, logged to MLflow); the items and
their noise are the benchmark's (seed 0), so grids of two trials show the same prompts from the
same noise, sampled with each recipe's own :class:`~trainers.sampling.StudentScheduler`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainers.evaluate import EvalConfig, build_eval_set, student_generator
from trainers.sampling import StudentScheduler
from trainers.world import World

COLUMNS = 8
MIN_TILE = 64  # pixels: smaller images are upscaled by an integer factor (16-pixel images are too small to see)


@torch.no_grad()
def sample_grid(world: World, student: torch.nn.Module, recipe, out: Path, items: int = 32) -> Path:
    """Write the PNG of ``student``'s samples (its recipe's nfe and shift) on ``items`` benchmark items."""
    # half the tiles are edits: a world with few held-out edits (a small real world) gets a smaller grid
    items = min(items, 2 * max(len(world.edit_pool("heldout")), len(world.edit_types)))
    es = build_eval_set(world, EvalConfig(items=items, samples_per_prompt=4, seed=0))
    student.eval()
    generate = student_generator(student, StudentScheduler.from_recipe(recipe))
    samples = generate(es.eps, es.cond, lambda k: es.renoise(k, torch.arange(len(es.cond))))
    images = world.to_pixels(samples.float()).clamp(-1, 1)
    n_t2i = len(es.t2i_rows) * es.samples_per_prompt
    sources = world.edit_sources(es.edit_rows) if es.edit_rows else None
    tiles = list(images[:n_t2i])
    for i, edited in enumerate(images[n_t2i:]):
        tiles += [sources[i], edited]
    tiles += [torch.ones_like(tiles[0])] * (-len(tiles) % COLUMNS)  # white padding to a full row
    rows = [torch.cat(tiles[r : r + COLUMNS], dim=2) for r in range(0, len(tiles), COLUMNS)]
    grid = ((torch.cat(rows, dim=1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    scale = max(1, MIN_TILE // images.shape[-1])
    grid = np.kron(grid, np.ones((scale, scale, 1), dtype=np.uint8))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out)
    return out
