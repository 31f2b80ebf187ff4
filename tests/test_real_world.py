"""A real-format world (diffusers Qwen-Image folders) through the World contract, a sweep and promote.

Run: .venv/bin/python -m pytest tests/test_real_world.py -q
The world is make_tiny's random-weight folder (conftest's ``tiny_real_world``): its scores say nothing
about quality, but every code path a real Qwen-Image world takes runs for real — the world.yaml reader,
the text-condition cache, latent DMD in adapter mode, the VAE, the CLIP and VLM judges, Ray Tune,
MLflow and the promoted student inside diffusers' own QwenImagePipeline.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from promote_helpers import run_main
from sweep_helpers import MICRO_BASE, mlflow_runs

from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec
from orchestrator.sweep.engine import run_sweep
from trainers.distill import distill
from trainers.recipe import Recipe
from trainers.world import load_world, world_info
from trainers.worlds.diffusers import text as text_module
from trainers.worlds.diffusers.world import DiffusersWorld

REAL_BASE = MICRO_BASE | {"eval_items": 16, "eval_items_quick": 16}


def real_spec(folder: Path, world: Path, **sections) -> Path:
    """A two-trial micro spec over the real-format world (a task-ratio search; promote: knee, 4 steps)."""
    spec = {
        "name": "real",
        "world": str(world.parent),
        "base": REAL_BASE,
        "search": {"t2i_edit_ratio": {"float": [0.2, 0.8], "step": 0.6}},
        "objectives": [{"metric": "t2i_score", "mode": "max"}, {"metric": "edit_score", "mode": "max"}],
        "sampler": {"name": "grid"},
        "budget": {"trials": 2, "concurrent": 1},
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
        "promote": {"steps": 4, "pick": "knee"},
    } | sections
    path = folder / "real.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_world_info_comes_from_the_files_without_weights(tiny_real_world):
    info = world_info(tiny_real_world)
    assert info.categories == ("landscape", "portrait", "text")
    assert set(info.edit_types) == {"recolour", "add_object", "change_text"}
    # the file's specialist, and Qwen-Image-Edit's transformer as the implicit one on edit items
    assert info.specialists == {"text": frozenset({"text"}), "edit": frozenset({"edit"})}
    assert info.mode("t2i_score/portrait") == "max" and info.mode("edit_score/recolour") == "max"
    assert world_info(tiny_real_world.parent) == info  # the folder names the same world


def test_world_contract_on_latents(tiny_real_world):
    world = load_world(tiny_real_world)
    world.prepare(progress=False)
    assert world.image_shape == (16, 8, 8)  # 64 px through the 8× VAE
    rows = world.prompt_pool("train").slice(0, 3).to_pylist()
    cond = world.t2i_cond(rows)
    assert cond.text.shape[0] == 3 and cond.text.shape[2] == 32 and cond.source is None
    edits = world.edit_pool("heldout").slice(0, 2).to_pylist()
    edit = world.edit_cond(edits)
    assert edit.source.shape == (2, 16, 8, 8) and bool(edit.is_edit.all())
    # the unconditional edit branch is the empty instruction WITH the source: image tokens, not empty
    assert edit.null_mask.sum(1).min() > cond.null_mask.sum(1).max()
    pixels = world.to_pixels(edit.source)
    assert pixels.shape == (2, 3, 64, 64) and pixels.abs().max() <= 1
    assert world.edit_sources(edits).shape == (2, 3, 64, 64)


def test_a_trial_on_a_warm_cache_never_loads_a_text_encoder(tiny_real_world, monkeypatch):
    world = load_world(tiny_real_world)
    world.prepare(progress=False)
    loads = text_module.QwenPromptEncoder.loads
    recipe = Recipe.from_params(REAL_BASE, {"steps": 2, "report_every": 2})
    result = distill(recipe, world)
    assert text_module.QwenPromptEncoder.loads == loads
    assert math.isfinite(result.metrics["t2i_score"]) and math.isfinite(result.metrics["edit_score"])


def test_adapter_mode_is_the_real_worlds_default_and_keeps_the_base(tiny_real_world):
    world = load_world(tiny_real_world)
    world.prepare(progress=False)
    assert world.default_model_mode() == "adapter"
    teachers = world.load_teachers()
    before = {k: v.clone() for k, v in teachers["base"].model.state_dict().items()}
    world.load_teachers = lambda: teachers  # the run uses (and must not touch) these very weights
    result = distill(Recipe.from_params(REAL_BASE, {"steps": 2, "report_every": 2, "cfg": "norm_rescaled"}), world)
    after = teachers["base"].model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    names = [n for n, _ in result.student.named_parameters()]  # the sampler model: the EMA adapter
    assert names and all("lora" in n for n in names)


@pytest.mark.slow
def test_micro_sweep_on_a_real_format_world_then_promote_into_a_diffusers_pipeline(
    tiny_real_world, tmp_path, capsys
):
    from diffusers import QwenImagePipeline, QwenImageTransformer2DModel

    spec_path = real_spec(tmp_path, tiny_real_world)
    start = time.perf_counter()
    outcome = run_sweep(load_spec(spec_path), runs_dir=tmp_path / "runs")
    wall = time.perf_counter() - start
    trials = pl.read_parquet(outcome.run_dir / "trials.parquet")
    assert trials.height == 2 and set(trials["status"]) == {"FINISHED"}
    assert all(math.isfinite(v) for c in ("t2i_score", "edit_score") for v in trials[c])
    parents, children = mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "real")
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    print(f"real-format micro sweep: 2 trials in {wall:.0f} s")
    # promote the knee: a merged student, a plain diffusers transformer folder, registered
    code, out, err = run_main(capsys, outcome.run_dir, "--spec", spec_path)
    assert code == 0, out + err
    assert "registered real-student version 1" in out
    promoted = [p for p in RunDir(outcome.run_dir).path.glob("promoted/*") if p.is_dir()]
    assert len(promoted) == 1
    transformer = QwenImageTransformer2DModel.from_pretrained(promoted[0] / "transformer")
    assert not any("lora" in name for name, _ in transformer.named_parameters())
    pipe = QwenImagePipeline.from_pretrained(tiny_real_world.parent / "qwen-image", transformer=transformer)
    image = pipe("a red sky over green hills", num_inference_steps=2, height=64, width=64,
                 output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()


def test_a_world_saved_by_diffusers_itself_works_the_same(tiny_real_world, tmp_path):
    """Pipeline folders written by QwenImagePipeline/QwenImageEditPipeline.save_pretrained, not make_tiny."""
    from diffusers import QwenImageEditPipeline, QwenImagePipeline

    src = tiny_real_world.parent
    world = tmp_path / "world"
    world.mkdir()
    QwenImagePipeline.from_pretrained(src / "qwen-image").save_pretrained(world / "t2i")
    shutil.copytree(src / "qwen-image-edit", world / "edit")  # its processor needs torchvision to load here
    assert QwenImageEditPipeline.load_config(world / "edit")["_class_name"] == "QwenImageEditPipeline"
    shutil.copytree(src / "clip", world / "clip")
    # manifests in the documented format, written here: one category, one edit type
    prompts = pq.read_table(src / "prompts.parquet").to_pylist()
    keep = [r for r in prompts if r["category"] == "portrait"]
    pq.write_table(pq.read_table(src / "prompts.parquet").from_pylist(keep), world / "prompts.parquet")
    edits = pq.read_table(src / "edits.parquet")
    shutil.copytree(src / "sources", world / "sources")
    pq.write_table(edits, world / "edits.parquet")
    (world / "world.yaml").write_text(
        "kind: diffusers\npipeline: t2i\nedit_pipeline: edit\nresolution: 64\n"
        "prompts: prompts.parquet\nedits: edits.parquet\njudge: {clip: clip}\nedit_vision_area: 4096\n"
    )
    info = world_info(world)
    assert info.categories == ("portrait",) and info.specialists == {"edit": frozenset({"edit"})}
    assert "clip_direction" in info.metrics and "edit_pq" not in info.metrics  # no VLM judge
    loaded = DiffusersWorld(world)
    loaded.prepare(progress=False)
    recipe = Recipe.from_params(REAL_BASE, {"steps": 2, "report_every": 2, "category_mix": {"portrait": 1.0}})
    result = distill(recipe, loaded)
    assert math.isfinite(result.metrics["t2i_score/portrait"]) and math.isfinite(result.metrics["clip_direction"])
