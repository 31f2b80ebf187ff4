"""The trainable's shared caches and sample grid, without Ray.

Run: .venv/bin/python -m pytest tests/test_trial.py -q
"""

from __future__ import annotations

from PIL import Image

from orchestrator import trial
from trainers.recipe import Recipe
from trainers.tinyworld.pretrain import MICRO_WORLD


def test_shared_world_is_built_once_per_process_with_teachers_loaded_once(micro_checkpoints):
    options = {"checkpoints": str(micro_checkpoints), **MICRO_WORLD}
    world = trial.shared_world("tiny", options)
    assert trial.shared_world("tiny", dict(reversed(options.items()))) is world  # keyed by content
    assert world.load_teachers() is world.load_teachers()
    assert world.prompt_pool("train") is world.prompt_pool("train")
    assert trial.shared_world("tiny", {**options, "train_prompts": 48}) is not world


def test_sample_grid_is_a_png_of_t2i_samples_and_edit_pairs(micro_checkpoints, tmp_path):
    world = trial.shared_world("tiny", {"checkpoints": str(micro_checkpoints), **MICRO_WORLD})
    student = world.load_teachers()["base"].model
    path = trial.sample_grid(world, student, Recipe(), tmp_path / "grid.png", items=32)
    image = Image.open(path)
    # 16 T2I samples + 16 (source, edit) pairs = 48 tiles, 8 per row, 64 pixels each
    assert image.size == (8 * 64, 6 * 64)
