"""orchestrator.world_spec: the `world:` section resolved (paths absolute, info known) before anything else.

Run: .venv/bin/python -m pytest tests/test_world_spec.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import micro_spec

from orchestrator.world_spec import WorldSpec, resolve_world
from orchestrator.yamlio import SpecError


def _resolve(raw, spec_path: Path):
    world, info, problems = resolve_world(raw, spec_path)
    return world, info, [(p.where, p.message) for p in problems]


def test_tiny_resolves_with_its_info_and_options(tmp_path):
    world, info, problems = _resolve("tiny", tmp_path / "spec.yaml")
    assert (world, info.name, problems) == (WorldSpec(), "tiny", [])
    (tmp_path / "micro").mkdir()
    world, info, problems = _resolve({"name": "tiny", "checkpoints": "micro", "resolution": 32}, tmp_path / "s.yaml")
    assert problems == [] and world.options == {"checkpoints": str(tmp_path / "micro"), "resolution": 32}
    assert info.resolutions == (16, 32)


def test_paths_are_relative_to_the_spec_and_must_exist(tmp_path):
    spec = tmp_path / "spec.yaml"
    world, info, problems = _resolve({"name": "tiny", "checkpoints": "absent"}, spec)
    assert info is None and problems == [("world.checkpoints", "expected an existing folder, found 'absent'")]
    assert world.checkpoints == str(tmp_path / "absent")  # absolute, for the Ray workers
    _, _, problems = _resolve("./nowhere", spec)
    assert problems == [("world", "expected 'tiny' or an existing path, found './nowhere'")]
    (tmp_path / "real").mkdir()
    _, _, problems = _resolve({"name": "real", "resolution": 16}, spec)
    assert problems == [("world", "expected options only with name 'tiny', found resolution")]


def test_a_folder_without_a_world_yaml_is_one_problem(tmp_path):
    (tmp_path / "real").mkdir()
    _, info, [(where, message)] = _resolve("real", tmp_path / "spec.yaml")
    assert info is None and where == "world"
    assert message.startswith("expected a world this version can load, found 'real': no world.yaml in that folder")


def test_a_broken_section_is_left_to_the_spec_s_validation(tmp_path):
    assert resolve_world({"name": "tiny", "resolution": 64}, tmp_path / "s.yaml") == (None, None, [])


def test_tiny_world_info_loads_nothing(tmp_path):
    """world_info describes the tiny world from its constants: no checkpoint folder, no pools, no weights."""
    from trainers.tinyworld.world import TinyWorld
    from trainers.world import World, WorldInfo, world_info

    info = world_info("tiny", checkpoints=tmp_path / "no-such-checkpoints", resolution=32)
    assert isinstance(info, WorldInfo) and info.name == "tiny"
    assert info.categories == ("landscape", "portrait", "text")
    assert info.edit_types == TinyWorld.edit_types and "mirror" in info.edit_types
    assert dict(info.specialists) == {"text": frozenset({"text"})}
    assert info.teachers == ("base", "text") and info.resolutions == (16, 32)
    assert set(info.metrics) == {"score", "t2i_score", "edit_score", "diversity", "fd", "adherence", "purity"}
    assert info.mode("fd") == "min" and info.mode("score") == "max"
    assert info.mode("t2i_score/text") == "max" and info.mode("edit_score/mirror") == "max"
    assert info.mode("t2i_score/mirror") is None and info.mode("fd/text") is None and info.mode("clip") is None
    assert not (tmp_path / "no-such-checkpoints").exists()
    # In a fresh interpreter: describing the world imports no model code (diffusers) at all.
    probe = (
        "import sys; from trainers.world import world_info; info = world_info('tiny', checkpoints='/nowhere'); "
        "assert 'trainers.models' not in sys.modules and 'diffusers' not in sys.modules, 'model code imported'; "
        "print(','.join(info.categories))"
    )
    root = Path(__file__).parent.parent
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True, text=True, timeout=300,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "landscape,portrait,text"), result.stderr
    # The interface: TinyWorld is a World, and its instance answers the same without loading anything.
    world = TinyWorld(checkpoints=tmp_path / "no-such-checkpoints")
    assert isinstance(world, World) and world.info() == TinyWorld.info()
    assert world._pools == {}
    with pytest.raises(ValueError, match="unknown option"):
        world_info("tiny", checkpoint="x")
    with pytest.raises(ValueError, match="resolution"):
        world_info("tiny", resolution=64)


def test_world_options_are_validated_with_their_line(tmp_path, micro_checkpoints):
    with pytest.raises(SpecError) as err:
        micro_spec(tmp_path, micro_checkpoints, world={"name": "tiny", "checkpoint": "x"})
    assert "world.checkpoint: unknown key 'checkpoint'; did you mean 'checkpoints'?" in str(err.value)
    spec = micro_spec(tmp_path, micro_checkpoints)
    assert spec.world.name == "tiny" and spec.world.options["checkpoints"] == str(micro_checkpoints)
    assert micro_spec(tmp_path, micro_checkpoints, world="tiny").world.options == {}


# -- a world.yaml with problems: its own file and lines, exit 2 ---------------------------------------
# trainers.world routes a world path to its world.yaml's reader (trainers.worlds.diffusers.config);
# its WorldFileError becomes a SpecError of the world file, so the CLI prints that file's lines.

BROKEN_WORLD = """\
kind: diffusers
pipeline: nowhere
resolution: 60
prompts: prompts.parquet
judge: {clip: clip}
"""


def _broken_world(tmp_path: Path) -> Path:
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.yaml").write_text(BROKEN_WORLD)
    return tmp_path / "world" / "world.yaml"


WORLD_PROBLEMS = [
    (2, "pipeline: expected a QwenImagePipeline folder, found 'nowhere'"),
    (3, "resolution: expected a positive multiple of 16 (pixels), found 60"),
    (4, "prompts: expected a parquet file, found 'prompts.parquet'"),
    (5, "judge.clip: expected a CLIPModel folder, found 'clip'"),
]


@pytest.mark.parametrize("name", ["world", "world/world.yaml"])
def test_a_world_yaml_with_problems_is_a_spec_error_of_that_file(tmp_path, name):
    world_file = _broken_world(tmp_path)
    with pytest.raises(SpecError) as err:
        resolve_world(name, tmp_path / "spec.yaml")
    assert err.value.file == str(world_file)
    lines = str(err.value).splitlines()
    assert len(lines) == len(WORLD_PROBLEMS)
    for text, (line, words) in zip(lines, WORLD_PROBLEMS, strict=True):
        assert text.startswith(f"{world_file}:{line}: {words}"), text


def test_the_sweep_cli_prints_the_world_yaml_problems_and_starts_nothing(tmp_path):
    """`python -m orchestrator.sweep spec.yaml`: the world file's problems at its lines, exit 2, no run."""
    world_file = _broken_world(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: real\nworld: world\nbudget: {trials: 2}\n")
    root = Path(__file__).parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec), "--runs-dir", str(tmp_path / "runs")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0].startswith(f"{world_file}: 4 problems")
    for line, words in WORLD_PROBLEMS:
        assert f"  {world_file}:{line}: {words}" in result.stderr
    assert str(spec) not in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml", "world"]  # no runs/, no mlflow.db
