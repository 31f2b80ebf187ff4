"""Tests of trainers/checkpoint.py: pickle-free round trips of real training state, atomic writes.

Run: .venv/bin/python -m pytest tests/test_checkpoint.py -q
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.checkpoint import load_state, save_state, write_atomically

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

    trainers/ does not import pickle at all. orchestrator/search.py may *write* with it (checking
    that the searcher Tune saves is picklable), never read: only Ray restores its own pickled state.
    """
    offenders = []
    for path in sorted((ROOT / "trainers").rglob("*.py")) + sorted((ROOT / "orchestrator").rglob("*.py")):
        text = path.read_text()
        writer = path == ROOT / "orchestrator" / "search.py"
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
