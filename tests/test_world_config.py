"""trainers/worlds/diffusers/config.py: world.yaml read and checked, problems as `world.yaml:LINE: key: ...`.

Run: .venv/bin/python -m pytest tests/test_world_config.py -q

The fixture writes a world folder by hand, without weights: the JSON configs carry the class names
the checks read, the pipeline folders have empty component subfolders, the manifests are tiny
parquet files and the edit sources two 8×8 PNGs. Nothing here imports torch or diffusers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from trainers.worlds.diffusers.config import (
    SpecialistConfig,
    WorldConfig,
    WorldFileError,
    read_world_config,
    world_info_of,
)

WORLD_YAML = """\
kind: diffusers
pipeline: qwen-image
edit_pipeline: qwen-image-edit
student: pipeline
specialists:
  text: text-teacher/transformer
  style:
    lora: style-lora
    categories: [landscape, portrait]
resolution: 64
prompts: prompts.parquet
edits: edits.parquet
judge:
  clip: clip
  vlm: judge-vlm
text_cache: text-cache
"""  # the line numbers the cases below expect: kind 1, pipeline 2, ... text_cache 16

CATEGORIES = ("landscape", "portrait", "text")
PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _pipeline(folder: Path, class_name: str) -> None:
    _json(folder / "model_index.json", {"_class_name": class_name, **{p: ["diffusers", "X"] for p in PARTS}})
    for part in PARTS:
        (folder / part).mkdir()


def _prompts(splits=("train", "train", "heldout")) -> dict[str, list]:
    rows = [(f"a {c} #{i}", c, s) for c in CATEGORIES for i, s in enumerate(splits)]
    return {"prompt": [r[0] for r in rows], "category": [r[1] for r in rows], "split": [r[2] for r in rows]}


EDITS = {
    "source": ["sources/a.png", "sources/b.png", "sources/a.png", "sources/b.png"],
    "instruction": ["make it red", "add a cat", "make it blue", "write hello"],
    "edit_type": ["recolour", "add_object", "recolour", "change_text"],
    "split": ["train", "train", "heldout", "heldout"],
    "category": ["landscape", "text", "landscape", "text"],
}


@pytest.fixture()
def world(tmp_path) -> Path:
    """A complete, valid world folder (no weights); returns the folder."""
    root = tmp_path / "world"
    root.mkdir()
    (root / "world.yaml").write_text(WORLD_YAML)
    _pipeline(root / "qwen-image", "QwenImagePipeline")
    _pipeline(root / "qwen-image-edit", "QwenImageEditPipeline")
    _json(root / "text-teacher" / "transformer" / "config.json", {"_class_name": "QwenImageTransformer2DModel"})
    _json(root / "style-lora" / "adapter_config.json", {"peft_type": "LORA", "r": 4})
    _json(root / "clip" / "config.json", {"architectures": ["CLIPModel"], "model_type": "clip"})
    _json(root / "judge-vlm" / "config.json", {"architectures": ["Qwen2_5_VLForConditionalGeneration"]})
    pq.write_table(pa.table(_prompts()), root / "prompts.parquet")
    pq.write_table(pa.table(EDITS), root / "edits.parquet")
    (root / "sources").mkdir()
    for name, colour in [("a", (200, 30, 30)), ("b", (30, 30, 200))]:
        Image.new("RGB", (8, 8), colour).save(root / "sources" / f"{name}.png")
    return root


def _edit(old: str, new: str) -> Callable[[Path], None]:
    """A case that rewrites one piece of world.yaml (line numbers kept: a removed line becomes a comment)."""

    def apply(root: Path) -> None:
        text = (root / "world.yaml").read_text()
        assert old in text, old
        (root / "world.yaml").write_text(text.replace(old, new, 1))

    return apply


def _file(relative: str, write: Callable[[Path], None]) -> Callable[[Path], None]:
    """A case that rewrites one file of the world folder."""
    return lambda root: write(root / relative)


def _table(data: dict) -> Callable[[Path], None]:
    return lambda path: pq.write_table(pa.table(data), path)


def _without(part: str) -> Callable[[Path], None]:
    return lambda root: (root / part).rmdir() if (root / part).is_dir() else (root / part).unlink()


# (case, the world changed, line, key path, what the message says after "key: ")
CASES = [
    ("unknown key", _edit("text_cache:", "text_cach:"), 16, "text_cach",
     "unknown key 'text_cach'; did you mean 'text_cache'?"),
    ("unknown nested key", _edit("  vlm:", "  vlmm:"), 15, "judge.vlmm", "unknown key 'vlmm'; did you mean 'vlm'?"),
    ("kind", _edit("kind: diffusers", "kind: onnx"), 1, "kind", "expected 'diffusers', found 'onnx'"),
    ("wrong type", _edit("resolution: 64", "resolution: big"), 10, "resolution",
     "expected a valid integer, found 'big'"),
    ("resolution not a multiple of 16", _edit("resolution: 64", "resolution: 60"), 10, "resolution",
     "expected a positive multiple of 16 (pixels), found 60"),
    ("missing required key", _edit("prompts: prompts.parquet", "# no prompts"), 1, "prompts",
     "missing required key"),
    ("missing pipeline folder", _edit("pipeline: qwen-image\n", "pipeline: nowhere\n"), 2, "pipeline",
     "expected a QwenImagePipeline folder, found 'nowhere' (no such folder:"),
    ("pipeline of another class", _file("qwen-image/model_index.json", lambda p: _json(p, {"_class_name": "FluxPipeline"})),
     2, "pipeline", "expected a QwenImagePipeline folder, found _class_name 'FluxPipeline' in"),
    ("pipeline without its vae", _without("qwen-image/vae"), 2, "pipeline",
     "expected a QwenImagePipeline folder with transformer/, vae/, text_encoder/, tokenizer/, scheduler/, found no vae/"),
    ("edit_pipeline naming the T2I pipeline", _edit("edit_pipeline: qwen-image-edit", "edit_pipeline: qwen-image"), 3,
     "edit_pipeline", "expected a QwenImageEditPipeline or QwenImageEditPlusPipeline folder, found _class_name "
     "'QwenImagePipeline'"),
    ("specialist transformer of another class",
     _file("text-teacher/transformer/config.json", lambda p: _json(p, {"_class_name": "AutoencoderKLQwenImage"})),
     6, "specialists.text", "expected a QwenImageTransformer2DModel folder, found _class_name 'AutoencoderKLQwenImage'"),
    ("lora without adapter_config.json", _without("style-lora/adapter_config.json"), 8, "specialists.style.lora",
     "expected a LoRA folder (adapter_config.json), found none in"),
    ("specialist with both", _edit("    lora: style-lora\n", "    lora: style-lora\n    transformer: text-teacher/transformer\n"),
     7, "specialists.style", "expected one of transformer or lora, found both"),
    ("specialist with neither", _edit("    lora: style-lora\n", "    # no lora\n"), 7, "specialists.style",
     "expected one of transformer or lora, found neither"),
    ("specialist category not in the manifest", _edit("[landscape, portrait]", "[landscape, portrat]"), 9,
     "specialists.style.categories",
     "expected categories of the prompt manifest (landscape, portrait, text), found 'portrat'; did you mean 'portrait'?"),
    ("specialist named after no category", _edit("  text: text-teacher", "  txt: text-teacher"), 6, "specialists.txt",
     "expected a specialist named after a category of the prompt manifest (landscape, portrait, text), found 'txt'"),
    ("specialist named base", _edit("  text: text-teacher", "  base: text-teacher"), 6, "specialists.base",
     "expected a specialist name other than 'base' (the base teacher), found 'base'"),
    ("manifest not parquet", _file("prompts.parquet", lambda p: p.write_text("prompt,category\n")), 11, "prompts",
     "expected a parquet file, found 'prompts.parquet' (pyarrow:"),
    ("manifest lacking a column", _file("prompts.parquet", _table({"prompt": ["a"], "split": ["train"]})), 11, "prompts",
     "expected columns prompt, category, split in 'prompts.parquet', found no category (its columns: prompt, split)"),
    ("manifest column not strings", _file("edits.parquet", _table({**EDITS, "edit_type": [1, 2, 1, 3]})), 12, "edits",
     "expected string columns in 'edits.parquet', found edit_type: int64"),
    ("split values", _file("prompts.parquet", _table(_prompts(("train", "test", "heldout")))), 11, "prompts",
     "expected split values 'train' or 'heldout' in 'prompts.parquet', found 'test'"),
    ("a split without rows", _file("edits.parquet", _table({**EDITS, "split": ["train"] * 4})), 12, "edits",
     "expected rows in every split (train, heldout) of 'edits.parquet', found none in heldout"),
    ("edits without edit_pipeline", _edit("edit_pipeline: qwen-image-edit", "# T2I only"), 12, "edits",
     "expected edits only with an edit_pipeline, found no edit_pipeline"),
    ("edit_pipeline without edits", _edit("edits: edits.parquet", "# no edits"), 3, "edit_pipeline",
     "expected an edits manifest (edits:) with it, found none"),
    ("edit sources missing", _without("sources/a.png"), 12, "edits",
     "expected the source images of 'edits.parquet' (paths relative to the world folder), found 1 missing: "
     "'sources/a.png'"),
    ("clip not a CLIPModel", _file("clip/config.json", lambda p: _json(p, {"architectures": ["CLIPVisionModel"]})),
     14, "judge.clip", "expected a CLIPModel folder, found architectures ['CLIPVisionModel'] in"),
    ("vlm not a Qwen2.5-VL", _file("judge-vlm/config.json", lambda p: _json(p, {"architectures": ["Qwen2VLModel"]})),
     15, "judge.vlm", "expected a Qwen2_5_VLForConditionalGeneration folder, found architectures ['Qwen2VLModel']"),
    ("judge folder without config.json", _without("judge-vlm/config.json"), 15, "judge.vlm",
     "expected a Qwen2_5_VLForConditionalGeneration folder, found no config.json in"),
    ("student edit_pipeline without one",
     lambda root: [_edit("student: pipeline", "student: edit_pipeline")(root), _edit("edit_pipeline: qwen", "# qwen")(root),
                   _edit("edits: edits.parquet", "# no edits")(root)],
     4, "student", "expected 'pipeline' in a world without edit_pipeline, found 'edit_pipeline'"),
    ("student of another value", _edit("student: pipeline", "student: transformer"), 4, "student",
     "expected 'pipeline' or 'edit_pipeline', found 'transformer'"),
    ("unsafe YAML", _edit("resolution: 64", "resolution: !!python/object/apply:os.system [x]"), 10, "resolution",
     "expected plain YAML values, found the tag !!python/object/apply:os.system"),
    ("duplicate key", _edit("text_cache: text-cache", "pipeline: qwen-image"), 16, "pipeline",
     "duplicate key (first given on line 2)"),
    ("edit_vision_area below min_pixels", _edit("text_cache: text-cache", "edit_vision_area: 1024"),
     16, "edit_vision_area", "expected a positive int of at least 3136 (pixels, 28*28*4), found 1024"),
    ("edit_vision_area not an int", _edit("text_cache: text-cache", "edit_vision_area: 4096.0"), 16,
     "edit_vision_area", "expected a valid integer, found 4096.0"),
]


def _problems(path: Path) -> list[str]:
    with pytest.raises(WorldFileError) as err:
        read_world_config(path)
    assert isinstance(err.value, ValueError)
    assert str(err.value).splitlines() == [p.render(err.value.file) for p in err.value.problems]
    return str(err.value).splitlines()


# -- a valid world ----------------------------------------------------------------------------------


def test_a_valid_world_reads_with_absolute_paths(world):
    config = read_world_config(world / "world.yaml")
    assert isinstance(config, WorldConfig)
    assert (config.file, config.root) == (world / "world.yaml", world)
    assert (config.pipeline, config.edit_pipeline) == (world / "qwen-image", world / "qwen-image-edit")
    assert (config.prompts, config.edits, config.text_cache) == (
        world / "prompts.parquet", world / "edits.parquet", world / "text-cache")
    assert (config.clip, config.vlm, config.student, config.resolution) == (
        world / "clip", world / "judge-vlm", "pipeline", 64)
    assert config.categories == CATEGORIES  # in order of first appearance
    assert config.edit_types == ("recolour", "add_object", "change_text")
    assert config.specialists == {
        "text": SpecialistConfig("text", world / "text-teacher" / "transformer", None, frozenset({"text"})),
        "style": SpecialistConfig("style", None, world / "style-lora", frozenset({"landscape", "portrait"})),
    }
    assert all(p.is_absolute() for p in (config.file, config.pipeline, config.prompts, config.clip))


def test_the_folder_reads_as_its_world_yaml_and_relative_paths_work(world, monkeypatch):
    assert read_world_config(world) == read_world_config(world / "world.yaml")
    monkeypatch.chdir(world.parent)
    config = read_world_config("world")
    assert config.file == world / "world.yaml" and config.pipeline.is_absolute()


def test_a_minimal_t2i_world_takes_the_defaults(world):
    (world / "world.yaml").write_text(
        "kind: diffusers\npipeline: qwen-image\nresolution: 32\nprompts: prompts.parquet\njudge: {clip: clip}\n"
    )
    config = read_world_config(world)
    assert (config.edit_pipeline, config.edits, config.vlm, config.specialists) == (None, None, None, {})
    assert (config.student, config.text_cache, config.edit_types) == ("pipeline", world / "text-cache", ())
    assert config.edit_vision_area == 1024 * 1024  # what QwenImageEditPipeline.__call__ resizes sources to


def test_edit_vision_area_is_read(world):
    _edit("text_cache: text-cache", "edit_vision_area: 4096")(world)
    assert read_world_config(world).edit_vision_area == 4096


def test_an_edit_plus_pipeline_and_an_edit_student_are_accepted(world):
    _pipeline(world / "plus", "QwenImageEditPlusPipeline")
    _edit("edit_pipeline: qwen-image-edit", "edit_pipeline: plus")(world)
    _edit("student: pipeline", "student: edit_pipeline")(world)
    config = read_world_config(world)
    assert (config.edit_pipeline, config.student) == (world / "plus", "edit_pipeline")


# -- malformed worlds -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, change, line, where, message", CASES, ids=[c[0] for c in CASES])
def test_a_malformed_world_names_the_file_line_and_key(world, name, change, line, where, message):
    change(world)
    lines = _problems(world)
    expected = f"{world / 'world.yaml'}:{line}: {where}: {message}"
    assert any(text.startswith(expected) for text in lines), "\n".join(lines)


def test_every_problem_is_reported_at_once_in_line_order(world):
    """One run shows everything wrong: a key, a folder, a manifest's content, a specialist, a judge."""
    for change in [
        _edit("kind: diffusers", "kind: diffusers\nextra: 1"),  # every later line moves down by one
        _edit("pipeline: qwen-image\n", "pipeline: nowhere\n"),
        _edit("[landscape, portrait]", "[landscape, cars]"),
        _edit("resolution: 64", "resolution: 65"),
        _file("edits.parquet", _table({**EDITS, "split": ["train", "test", "train", "train"]})),
        _file("clip/config.json", lambda p: _json(p, {"architectures": ["CLIPTextModel"]})),
    ]:
        change(world)
    file = world / "world.yaml"
    lines = _problems(file)
    assert [text.split(": ")[0:2] for text in lines] == [
        [f"{file}:2", "extra"],
        [f"{file}:3", "pipeline"],
        [f"{file}:10", "specialists.style.categories"],
        [f"{file}:11", "resolution"],
        [f"{file}:13", "edits"],
        [f"{file}:13", "edits"],
        [f"{file}:15", "judge.clip"],
    ]
    assert "unknown key 'extra'" in lines[0] and "found 'cars'" in lines[2]
    assert "found 'test'" in lines[4] and "found none in heldout" in lines[5]


def test_a_broken_key_does_not_hide_the_others(world):
    """Pydantic's problems and the file checks are reported together: a bad value is one problem, not all."""
    _edit("resolution: 64", "resolution: [64]")(world)
    _edit("  clip: clip", "  clip: no-clip")(world)
    _edit("  text: text-teacher/transformer", "  text: 3")(world)
    lines = _problems(world)
    assert [text.split(": ", 2)[1] for text in lines] == ["specialists.text", "resolution", "judge.clip"]
    assert lines[0].endswith(
        "expected a transformer folder or a mapping (transformer or lora, categories), found 3")


def test_files_that_are_no_world_yaml(tmp_path):
    assert _problems(tmp_path) == [f"{tmp_path / 'world.yaml'}: no such file"]
    (tmp_path / "world.yaml").write_text("")
    assert _problems(tmp_path) == [f"{tmp_path / 'world.yaml'}: expected a mapping of world keys, found an empty file"]
    (tmp_path / "world.yaml").write_text("- kind\n")
    assert _problems(tmp_path) == [f"{tmp_path / 'world.yaml'}:1: expected a mapping of world keys, found ['kind']"]
    (tmp_path / "world.yaml").write_text("kind: diffusers\n")
    assert [text.split(": ", 1)[1] for text in _problems(tmp_path)] == [
        f"{key}: missing required key" for key in ("pipeline", "resolution", "prompts", "judge")
    ]


def test_missing_edit_sources_are_named_a_few_at_a_time(world):
    many = {**EDITS, "source": [f"sources/gone{i}.png" for i in range(4)]}
    _table(many)(world / "edits.parquet")
    [line] = _problems(world)
    assert line.endswith(
        "found 4 missing: 'sources/gone0.png', 'sources/gone1.png', 'sources/gone2.png' and 1 more")


def test_the_error_pickles_with_its_problems(world):
    """Ray ships a worker's exception to the driver by pickling it."""
    import pickle

    _edit("kind: diffusers", "kind: onnx")(world)
    with pytest.raises(WorldFileError) as err:
        read_world_config(world)
    again = pickle.loads(pickle.dumps(err.value))
    assert (type(again), str(again), again.problems) == (WorldFileError, str(err.value), err.value.problems)


# -- the world's info ---------------------------------------------------------------------------------


def test_world_info_of_names_the_world_s_groups_teachers_and_metrics(world):
    info = world_info_of(read_world_config(world))
    assert info.name == str(world / "world.yaml")
    assert (info.categories, info.edit_types) == (CATEGORIES, ("recolour", "add_object", "change_text"))
    assert dict(info.specialists) == {"text": frozenset({"text"}), "style": frozenset({"landscape", "portrait"})}
    assert info.teachers == ("base", "text", "style") and info.resolutions == (64,)
    assert set(info.metrics) == {"score", "t2i_score", "t2i_score_se", "clip_score", "edit_score", "edit_score_se",
                                 "edit_sc", "edit_pq"}
    assert info.mode("score") == "max" and info.mode("t2i_score_se") == "min"
    assert info.mode("t2i_score/portrait") == "max" and info.mode("edit_score/add_object") == "max"
    assert info.mode("t2i_score/add_object") is None and info.mode("clip_direction") is None


def test_without_a_vlm_clip_direction_replaces_edit_pq(world):
    _edit("  vlm: judge-vlm\n", "")(world)
    info = world_info_of(read_world_config(world))
    assert "clip_direction" in info.metrics and "edit_pq" not in info.metrics and "score" in info.metrics


def test_a_sweep_spec_resolves_the_world_by_folder_or_file(world):
    """`world: world` in a spec next to the folder: trainers.world routes it here (kind: diffusers)."""
    from orchestrator.world_spec import resolve_world

    for name in ("world", "world/world.yaml"):
        spec, info, problems = resolve_world(name, world.parent / "spec.yaml")
        assert problems == [] and spec.name == str((world.parent / name).resolve())  # absolute for the workers
        assert info.name == str(world / "world.yaml") and info.categories == CATEGORIES
        assert {"text", "style"} <= set(info.specialists) and info.resolutions == (64,)
