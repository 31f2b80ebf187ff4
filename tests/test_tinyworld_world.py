"""Tests of trainers/tinyworld/world.py: TinyWorld behind the World contract, on the micro world.

Run: .venv/bin/python -m pytest tests/test_tinyworld_world.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers.tinyworld.pretrain import MICRO_WORLD
from trainers.tinyworld.world import CHECKPOINTS, METRICS, SPECIALISTS, TinyWorld, seeds_from
from trainers.world import World


def test_info_describes_the_world_and_refuses_unknown_options(tmp_path):
    info = TinyWorld.info(checkpoints=tmp_path / "absent", resolution=32)  # nothing is loaded
    assert info.categories == TinyWorld.categories and info.edit_types == TinyWorld.edit_types
    assert info.teachers == ("base", *SPECIALISTS) and dict(info.metrics) == METRICS
    assert info.mode("t2i_score/text") == "max" and info.mode("fd") == "min" and info.mode("nope") is None
    with pytest.raises(ValueError, match="unknown option"):
        TinyWorld.info(checkpoint="x")
    with pytest.raises(ValueError, match="expected a resolution in"):
        TinyWorld.info(resolution=64)


def test_pools_are_deterministic_split_and_sized(micro_world, micro_checkpoints):
    assert isinstance(micro_world, World)
    train, heldout = micro_world.prompt_pool("train"), micro_world.prompt_pool("heldout")
    assert train.num_rows == MICRO_WORLD["train_prompts"] and train is micro_world.prompt_pool("train")
    again = TinyWorld(checkpoints=micro_checkpoints, **MICRO_WORLD)
    assert again.prompt_pool("train").equals(train) and again.edit_pool("heldout").equals(micro_world.edit_pool("heldout"))
    assert set(train.column("split").to_pylist()) == {"train"} and set(heldout.column("split").to_pylist()) == {"heldout"}
    assert not set(train.column("template").to_pylist()) & set(heldout.column("template").to_pylist())
    assert micro_world.edit_pool("train").num_rows == MICRO_WORLD["train_edits"]


def test_conditions_for_prompts_and_edits(micro_world):
    rows = micro_world.prompt_pool("train").slice(0, 3).to_pylist()
    cond = micro_world.t2i_cond(rows)
    assert len(cond) == 3 and cond.text.shape[0] == 3 and cond.null_text.shape == cond.text.shape[:1] + cond.null_text.shape[1:]
    assert cond.categories == tuple(r["category"] for r in rows) and cond.source is None
    edits = micro_world.edit_pool("train").slice(0, 2).to_pylist()
    econd = micro_world.edit_cond(edits)
    assert econd.source.shape == (2, 3, 16, 16) and bool(econd.is_edit.all())
    assert torch.equal(econd.source, micro_world.render_edits(edits, "source"))
    assert not torch.equal(micro_world.edit_cond(edits, seeds=[1, 2]).source, econd.source)  # fresh jitter


def test_edit_source_and_target_share_the_render_seed(micro_world):
    edits = micro_world.edit_pool("heldout").slice(0, 4).to_pylist()
    source, target = (micro_world.render_edits(edits, which) for which in ("source", "target"))
    assert source.shape == target.shape == (4, 3, 16, 16)
    assert source.min() >= -1 and source.max() <= 1 and not torch.equal(source, target)


def test_teachers_load_frozen_in_float32_from_the_checkpoints(micro_world):
    teachers = micro_world.load_teachers()
    assert teachers.names == ("base", *SPECIALISTS)
    for teacher in teachers.values():
        params = list(teacher.model.parameters())
        assert not teacher.model.training and all(not p.requires_grad and p.dtype == torch.float32 for p in params)
    assert micro_world.card("base")["name"] == "base"


def test_a_missing_teacher_names_the_rebuild_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="trainers.tinyworld.pretrain"):
        TinyWorld(checkpoints=tmp_path).load_teacher_model("base")


def test_the_shipped_checkpoints_load():
    """The fp16 teachers and the judge shipped in the repository load with the current code."""
    world = TinyWorld()
    assert world.checkpoints == CHECKPOINTS
    model = world.load_teacher_model("base")
    assert model.config.resolution == 16 and next(model.parameters()).dtype == torch.float32
    assert not world.judge.training


def test_real_images_score_higher_than_noise(micro_world):
    rows = micro_world.prompt_pool("heldout").slice(0, 24).to_pylist()
    real = micro_world.real_t2i(rows, seed=0, samples_per_prompt=2)
    noise = torch.rand_like(real) * 2 - 1
    good, bad = (micro_world.score_t2i(x, rows, 2) for x in (real, noise))
    assert good["adherence"] > bad["adherence"] + 0.3
    edits = micro_world.edit_pool("heldout").slice(0, 24).to_pylist()
    assert micro_world.score_edits(micro_world.render_edits(edits, "target"), edits)["edit_score"] > 0.5


def test_seeds_from_draws_fresh_python_ints():
    rng = np.random.default_rng(0)
    a, b = seeds_from(rng, 3), seeds_from(rng, 3)
    assert all(type(s) is int for s in a) and a != b
    assert a == seeds_from(np.random.default_rng(0), 3)
