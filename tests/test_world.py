"""Tests of trainers/world.py: the registry of worlds, world_info/load_world, the per-process cache.

Run: .venv/bin/python -m pytest tests/test_world.py -q
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from trainers import world as world_module
from trainers.tinyworld.pretrain import MICRO_WORLD
from trainers.tinyworld.world import TinyWorld
from trainers.world import WORLDS, SharedWorld, World, load_world, register_world, shared_world, world_info


def test_the_tiny_world_is_registered_and_answers_the_contract(micro_checkpoints):
    assert WORLDS["tiny"].load_class() is TinyWorld
    world = load_world("tiny", checkpoints=micro_checkpoints, **MICRO_WORLD)
    assert isinstance(world, TinyWorld) and isinstance(world, World)
    assert world_info("tiny").categories == TinyWorld.categories


def test_a_registered_world_is_found_by_name_and_a_name_is_registered_once(monkeypatch):
    monkeypatch.setitem(WORLDS, "tiny-copy", world_module.WorldEntry("tiny-copy", WORLDS["tiny"].target, "test"))
    assert world_info("tiny-copy") == world_info("tiny")
    with pytest.raises(ValueError, match="already registered"):
        register_world("tiny", "trainers.tinyworld.world:TinyWorld", "again")


def test_unknown_names_and_folders_are_refused_naming_the_registered_worlds(tmp_path):
    with pytest.raises(ValueError, match=r"no such file or folder \(a world is 'tiny' or a folder"):
        load_world("nope")
    (tmp_path / "real").mkdir()
    with pytest.raises(ValueError, match="no world.yaml in that folder"):
        world_info(tmp_path / "real")


def test_world_module_imports_no_torch():
    """The spec loader imports trainers.world: registering a world must not import its (torch) module."""
    code = "import sys, trainers.world; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shared_world_is_built_once_per_process_with_teachers_loaded_once(micro_checkpoints):
    options = {"checkpoints": str(micro_checkpoints), **MICRO_WORLD}
    world = shared_world("tiny", options)
    assert isinstance(world, SharedWorld)
    assert shared_world("tiny", dict(reversed(options.items()))) is world  # keyed by content
    assert world.load_teachers() is world.load_teachers()
    assert world.prompt_pool("train") is world.prompt_pool("train")  # delegated to the one TinyWorld
    assert shared_world("tiny", {**options, "train_prompts": 48}) is not world


def test_shared_world_imports_no_ray():
    """promote uses the cache: importing it must not import Ray (it used to live in orchestrator/trial.py)."""
    code = "import sys; from trainers.world import shared_world; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
