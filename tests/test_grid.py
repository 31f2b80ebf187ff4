"""Tests of trainers/grid.py: the PNG of a student's samples on the first benchmark items.

Run: .venv/bin/python -m pytest tests/test_grid.py -q
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from trainers.evaluate import EvalConfig, build_eval_set, student_generator
from trainers.grid import sample_grid
from trainers.recipe import Recipe
from trainers.sampling import StudentScheduler


def test_sample_grid_is_a_png_of_t2i_samples_and_edit_pairs(micro_world, tmp_path):
    student = micro_world.load_teachers()["base"].model
    path = sample_grid(micro_world, student, Recipe(), tmp_path / "deep" / "grid.png", items=32)
    image = np.asarray(Image.open(path))
    # 16 T2I samples + 16 (source, edit) pairs = 48 tiles, 8 per row, 16-pixel images shown at 64 pixels
    assert image.shape == (6 * 64, 8 * 64, 3)
    # tile 0 is the first T2I sample of the recipe's scheduler on the benchmark's noise (seed 0)
    es = build_eval_set(micro_world, EvalConfig(items=32, samples_per_prompt=4, seed=0))
    every = torch.arange(len(es))
    first = student_generator(student, StudentScheduler.from_recipe(Recipe()))(
        es.eps, es.cond, lambda k: es.renoise(k, every)
    )[0].clamp(-1, 1)
    want = ((first + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(image[:64:4, :64:4], want)
    # the edit rows alternate the rendered source and the student's edit
    source = micro_world.render_edits(es.edit_rows[:1], "source")[0]
    assert np.array_equal(image[2 * 64 : 3 * 64 : 4, :64:4], ((source + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())


def test_recipes_with_other_samplers_give_other_grids(micro_world, tmp_path):
    student = micro_world.load_teachers()["base"].model
    a = sample_grid(micro_world, student, Recipe(nfe=2), tmp_path / "a.png", items=16)
    b = sample_grid(micro_world, student, Recipe(nfe=2, timestep_shift=3.0), tmp_path / "b.png", items=16)
    again = sample_grid(micro_world, student, Recipe(nfe=2), tmp_path / "again.png", items=16)
    assert a.read_bytes() == again.read_bytes() and a.read_bytes() != b.read_bytes()
