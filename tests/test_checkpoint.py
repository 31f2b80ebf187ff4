"""Tests of trainers/checkpoint.py: model folders, tensor files, pickle-free training state, atomic
trainer checkpoints, and that no other module reads or writes weights.

Run: .venv/bin/python -m pytest tests/test_checkpoint.py -q
"""

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.checkpoint import (
    CARD_FILE,
    RECIPE_FILE,
    checkpoint_recipe,
    load_card,
    load_checkpoint,
    load_into,
    load_model,
    load_state,
    load_tensors,
    save_card,
    save_checkpoint,
    save_model,
    save_state,
    save_tensors,
    write_atomically,
)
from trainers.models import FlowModel
from trainers.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]


def trained_optimiser() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    for _ in range(3):
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def test_round_trip_of_optimiser_scheduler_and_rng_states(tmp_path):
    _, opt, sched = trained_optimiser()
    numpy_rng = np.random.default_rng(7)
    numpy_rng.random(3)
    state = {
        "opt": opt.state_dict(),  # int parameter keys, tuple betas, 0-d step tensors
        "sched": sched.state_dict(),
        "torch_rng": torch.Generator().manual_seed(3).get_state(),  # uint8 byte tensor
        "numpy_rng": numpy_rng.bit_generator.state,  # 128-bit Python ints
        "counts": {"text": np.int64(4), "edit": 2},
        "nothing": None,
    }
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert loaded["counts"] == {"text": 4, "edit": 2}
    del state["counts"], loaded["counts"]
    assert_same(loaded, state)
    assert list(loaded["opt"]["state"]) == [0, 1, 2, 3]
    assert loaded["opt"]["param_groups"][0]["betas"] == (0.8, 0.99)
    assert loaded["torch_rng"].dtype == torch.uint8
    json.loads((tmp_path / "state.json").read_text())  # the skeleton is plain JSON


def test_loaded_state_continues_training_identically(tmp_path):
    model, opt, sched = trained_optimiser()
    save_state(tmp_path, {"opt": opt.state_dict(), "sched": sched.state_dict(), "model": model.state_dict()})
    twin, twin_opt, twin_sched = trained_optimiser()
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
        twin_opt.state.clear()
    loaded = load_state(tmp_path)
    twin.load_state_dict(loaded["model"])
    twin_opt.load_state_dict(loaded["opt"])
    twin_sched.load_state_dict(loaded["sched"])
    x = torch.randn(5, 3)
    for m, o, s in ((model, opt, sched), (twin, twin_opt, twin_sched)):
        m(x).square().mean().backward()
        o.step()
        s.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    assert twin_sched.get_last_lr() == sched.get_last_lr()


def test_unstorable_values_and_colliding_keys_are_errors(tmp_path):
    with pytest.raises(TypeError, match=r"cannot store a set at s\.a"):
        save_state(tmp_path, {"a": {1, 2}})
    with pytest.raises(ValueError, match="two tensors at the key path 's.a.b'"):
        save_state(tmp_path, {"a.b": torch.zeros(1), "a": {"b": torch.ones(1)}})
    with pytest.raises(TypeError, match="mixes int and str keys"):
        save_state(tmp_path, {"a": {1: 0, "x": 1}})
    with pytest.raises(FileNotFoundError, match="state.json"):
        load_state(tmp_path / "missing")


def test_write_atomically_replaces_and_never_leaves_half_a_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    write_atomically(target, lambda d: (d / "a.txt").write_text("1"))
    write_atomically(target, lambda d: (d / "b.txt").write_text("2"))
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]

    def crash(d: Path) -> None:
        (d / "half.txt").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(target, crash)
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # the old checkpoint survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folders left


def test_no_pickle_anywhere_in_the_package():
    """Checkpoints, caches and teachers load without pickle: nothing unpickles, no unsafe torch.load.

    trainers/ does not import pickle at all. orchestrator/search/samplers.py may *write* with it (checking
    that the searcher Tune saves is picklable), never read: only Ray restores its own pickled state.
    """
    offenders = []
    for path in sorted((ROOT / "trainers").rglob("*.py")) + sorted((ROOT / "orchestrator").rglob("*.py")):
        text = path.read_text()
        writer = path.relative_to(ROOT).as_posix().startswith("orchestrator/search")
        if re.search(r"^\s*(import|from)\s+(dill|joblib)\b", text, re.M) or (
            not writer and re.search(r"^\s*(import|from)\s+c?pickle\b", text, re.M)
        ):
            offenders.append(f"{path.name}: pickle import")
        if re.search(r"\b(c?pickle\.loads?|Unpickler)\b", text):
            offenders.append(f"{path.name}: unpickles")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                offenders.append(f"{path.name}: {call}")
    assert not offenders


def micro_model(seed: int) -> FlowModel:
    torch.manual_seed(seed)
    model = FlowModel.build("micro")
    with torch.no_grad():  # the output layer starts at zero: give every weight a seed-dependent value
        for p in model.parameters():
            p.normal_()
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_model_round_trip_in_float32_and_frozen(tmp_path):
    model = micro_model(0)
    save_model(model, tmp_path / "m")
    assert {"config.json", "diffusion_pytorch_model.safetensors"} <= {p.name for p in (tmp_path / "m").iterdir()}
    loaded = load_model(FlowModel, tmp_path / "m")
    assert same_weights(model, loaded) and not loaded.training and all(p.requires_grad for p in loaded.parameters())
    frozen = load_model(FlowModel, tmp_path, subfolder="m", frozen=True)
    assert same_weights(model, frozen) and not any(p.requires_grad for p in frozen.parameters())


def test_a_cast_save_stores_fp16_leaves_the_model_alone_and_loads_back_as_float32(tmp_path):
    model = micro_model(1)
    save_model(model, tmp_path / "half", dtype=torch.float16)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is not cast
    stored = load_tensors(tmp_path / "half" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    loaded = load_model(FlowModel, tmp_path / "half")
    for p, q in zip(model.parameters(), loaded.parameters(), strict=True):
        assert q.dtype == torch.float32 and torch.equal(q, p.half().float())


def test_load_into_copies_weights_into_a_built_model(tmp_path):
    source, target = micro_model(2), micro_model(3)
    save_model(source, tmp_path / "m")
    assert not same_weights(source, target)
    load_into(target, tmp_path / "m")
    assert same_weights(source, target)


def test_tensor_files_round_trip_non_contiguous_tensors(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3).t(), "b": torch.tensor([1, 2], dtype=torch.int64)}
    save_tensors(tensors, tmp_path / "t.safetensors")
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert set(loaded) == {"w", "b"} and all(torch.equal(loaded[k], tensors[k]) for k in tensors)


def test_trainer_checkpoint_folder_round_trip(tmp_path):
    student, fake = micro_model(4), micro_model(5)
    recipe = Recipe(steps=7, category_mix={"text": 1.0})
    save_checkpoint(tmp_path / "ck", {"student": student, "fake": fake, "ema": None}, {"step": 3}, recipe)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "fake", RECIPE_FILE, "state.json", "state.safetensors", "student"]
    assert checkpoint_recipe(tmp_path / "ck") == recipe
    fresh_student, fresh_fake = micro_model(6), micro_model(7)
    state = load_checkpoint(tmp_path / "ck", {"student": fresh_student, "fake": fresh_fake, "ema": None})
    assert state == {"step": 3} and same_weights(student, fresh_student) and same_weights(fake, fresh_fake)


@pytest.mark.parametrize("name", ["base", "text"])
def test_the_shipped_teachers_load_as_they_are(name):
    """The fp16 folders in trainers/tinyworld/checkpoints load with load_model, unchanged on disk."""
    folder = ROOT / "trainers" / "tinyworld" / "checkpoints" / name
    model = load_model(FlowModel, folder, frozen=True)
    stored = load_tensors(folder / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, stored[key].float()), key


def weight_io(path: Path) -> list[str]:
    """The calls to diffusers' save/load and the safetensors imports in a Python file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "save_pretrained", "from_pretrained"):
            found.append(f"{node.func.attr} (line {node.lineno})")
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
            a.name for a in node.names] if isinstance(node, ast.Import) else []
        found += [f"import {n} (line {node.lineno})" for n in names if n.split(".")[0] == "safetensors"]
    return found


def test_only_this_module_reads_or_writes_weights():
    """No other module saves or loads weights itself. The exceptions load pretrained Hugging Face
    components in their own formats: the tiny world's text encoder (and its embedding cache), and a
    real-model world's checkpoint folders (trainers/worlds/diffusers: transformer, VAE, text encoders,
    judges, the text-condition cache, and make_tiny writing a random-weight world)."""
    real_world = {f"trainers/worlds/diffusers/{m}.py" for m in ("latent", "text", "judge", "world", "make_tiny")}
    allowed = {"trainers/checkpoint.py", "trainers/text.py"} | real_world
    offenders = {
        rel: found
        for folder in ("trainers", "orchestrator", "benchmarks", "notebooks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (rel := path.relative_to(ROOT).as_posix()) not in allowed and (found := weight_io(path))
    }
    assert not offenders
    assert weight_io(ROOT / "trainers" / "checkpoint.py")  # the check does see the calls it looks for


def test_a_card_round_trips_as_indented_json(tmp_path):
    card = {"name": "micro", "scores@50": {"t2i_score": 0.5}}
    path = save_card(tmp_path, card)
    assert path == tmp_path / CARD_FILE and path.read_text().endswith("}\n")
    assert load_card(tmp_path) == card
