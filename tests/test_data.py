"""Tests of trainers/data.py: category mix, stochastic T2I:Edit rounding, reproducibility, resume.

Run: .venv/bin/python -m pytest tests/test_data.py -q
"""

import json

import numpy as np
import pyarrow as pa
import pytest

from trainers.data import BatchSampler, normalise_mix

CATEGORIES = ["landscape", "portrait", "text"]


@pytest.fixture
def prompt_pool() -> pa.Table:
    cats = [CATEGORIES[i % 3] for i in range(30)]
    return pa.table({"prompt": [f"{c} prompt {i}" for i, c in enumerate(cats)], "category": cats})


@pytest.fixture
def edit_pool() -> pa.Table:
    types = ["recolour_background", "mirror", "invert"]
    return pa.table(
        {
            "instruction": [f"edit {i}" for i in range(12)],
            "edit_type": [types[i % 3] for i in range(12)],
            "category": [CATEGORIES[i % 3] for i in range(12)],
        }
    )


def sampler(prompt_pool, edit_pool, mix=None, ratio=0.5, batch_size=16, seed=0) -> BatchSampler:
    mix = mix if mix is not None else {c: 1.0 for c in CATEGORIES}
    return BatchSampler(prompt_pool, edit_pool, category_mix=mix, t2i_edit_ratio=ratio, batch_size=batch_size,
                        seed=seed)


def test_text_only_mix_draws_only_text_prompts(prompt_pool, edit_pool):
    s = sampler(prompt_pool, edit_pool, mix={"text": 1.0, "landscape": 0.0}, ratio=0.7)
    for _ in range(200):
        batch = s.sample()
        assert set(batch.t2i.categories) <= {"text"}
        assert all(prompt_pool["category"][int(r)].as_py() == "text" for r in batch.t2i.rows)
        assert batch.t2i.prompts == [prompt_pool["prompt"][int(r)].as_py() for r in batch.t2i.rows]
    assert s.counts["landscape"] == 0 and s.counts["text"] > 0
    assert "portrait" not in s.counts  # not in the mix at all


def test_stochastic_rounding_gives_the_ratio_in_expectation(prompt_pool, edit_pool):
    s = sampler(prompt_pool, edit_pool, ratio=0.3, batch_size=16)
    n_batches = 2000
    sizes = {len(s.sample().t2i) for _ in range(n_batches)}
    assert sizes == {4, 5}  # 0.3 · 16 = 4.8 rounds to 4 or 5, never further
    t2i_share = 1 - s.composition()["edit_share"]
    # per-batch sd of n_t2i is 0.4, so the share's sd is 0.4 / 16 / sqrt(2000) ≈ 0.00056
    assert abs(t2i_share - 0.3) < 0.003
    assert s.counts["edit"] + sum(s.counts[c] for c in CATEGORIES) == 16 * n_batches


def test_integral_ratio_is_exact_and_extremes_are_pure(prompt_pool, edit_pool):
    quarter = sampler(prompt_pool, edit_pool, ratio=0.25)
    assert {len(quarter.sample().t2i) for _ in range(50)} == {4}
    only_t2i = sampler(prompt_pool, None, ratio=1.0)
    assert all(len(only_t2i.sample().edit) == 0 for _ in range(20))
    only_edit = sampler(prompt_pool, edit_pool, ratio=0.0)
    batch = only_edit.sample()
    assert len(batch.t2i) == 0 and len(batch.edit) == 16
    assert batch.edit.instructions == [edit_pool["instruction"][int(r)].as_py() for r in batch.edit.rows]
    assert batch.edit.edit_types == [edit_pool["edit_type"][int(r)].as_py() for r in batch.edit.rows]


def test_category_mix_proportions(prompt_pool, edit_pool):
    s = sampler(prompt_pool, edit_pool, mix={"landscape": 3, "portrait": 1, "text": 0}, ratio=1.0)
    for _ in range(500):
        s.sample()
    comp = s.composition()
    assert comp["text"] == 0.0
    assert abs(comp["landscape"] - 0.75) < 0.03  # sd ≈ 0.005 over 8000 draws
    assert comp["edit_share"] == 0.0


def test_category_mix_weighs_edit_rows_by_their_source_category(prompt_pool, edit_pool):
    text_only = sampler(prompt_pool, edit_pool, mix={"text": 1.0, "landscape": 0.0}, ratio=0.0)
    drawn = {c for _ in range(100) for c in text_only.sample().edit.categories}
    assert drawn == {"text"}  # a text-only recipe distils text images' edits only
    heavy = sampler(prompt_pool, edit_pool, mix={"landscape": 1, "portrait": 1, "text": 2}, ratio=0.0)
    cats = [c for _ in range(500) for c in heavy.sample().edit.categories]
    # the pool has as many rows of each category, so text edits are half the draws (sd ≈ 0.0044)
    assert abs(cats.count("text") / len(cats) - 0.5) < 0.02


def test_uniform_mix_or_uncategorised_edits_draw_rows_uniformly(prompt_pool, edit_pool):
    real = edit_pool.set_column(2, "category", pa.array(["edit"] * 12))  # a real world's edit manifest
    uniform, uncategorised = (sampler(prompt_pool, pool, ratio=0.0, seed=3) for pool in (edit_pool, real))
    rows = np.concatenate([uniform.sample().edit.rows for _ in range(300)])
    # a uniform mix ignores the edits' categories: the very draws of a pool without any
    assert np.array_equal(rows, np.concatenate([uncategorised.sample().edit.rows for _ in range(300)]))
    counts = np.bincount(rows, minlength=12)
    assert counts.min() > 0.75 * counts.mean()  # every row drawn about 400 times (sd ≈ 19)


def test_seeded_and_resumable_from_json_state(prompt_pool, edit_pool):
    a, b = sampler(prompt_pool, edit_pool, seed=7), sampler(prompt_pool, edit_pool, seed=7)
    for _ in range(5):
        x, y = a.sample(), b.sample()
        assert np.array_equal(x.t2i.rows, y.t2i.rows) and np.array_equal(x.edit.rows, y.edit.rows)
    saved = json.loads(json.dumps(a.state_dict()))  # must survive JSON
    expected = [a.sample() for _ in range(3)]
    resumed = sampler(prompt_pool, edit_pool, seed=123)
    resumed.load_state_dict(saved)
    for want in expected:
        got = resumed.sample()
        assert np.array_equal(got.t2i.rows, want.t2i.rows) and np.array_equal(got.edit.rows, want.edit.rows)
    assert resumed.counts == a.counts and resumed.batches == a.batches == 8
    assert not np.array_equal(sampler(prompt_pool, edit_pool, seed=8).sample().t2i.rows, expected[0].t2i.rows)


def test_errors_name_the_field(prompt_pool, edit_pool):
    with pytest.raises(ValueError, match="category_mix.*'sky'"):
        sampler(prompt_pool, edit_pool, mix={"sky": 1.0})
    with pytest.raises(ValueError, match="t2i_edit_ratio"):
        sampler(prompt_pool, edit_pool, ratio=1.5)
    with pytest.raises(ValueError, match="t2i_edit_ratio.*edit pool"):
        sampler(prompt_pool, None, ratio=0.5)
    with pytest.raises(ValueError, match="category_mix"):
        normalise_mix({"text": 0.0})
    with pytest.raises(ValueError, match="category_mix"):
        normalise_mix({"text": -1.0, "portrait": 2.0})
    with pytest.raises(ValueError, match="edit pool has no column 'edit_type'"):
        sampler(prompt_pool, edit_pool.drop_columns(["edit_type"]))


def test_from_recipe_reads_the_data_axes_batch_size_and_seed(prompt_pool, edit_pool):
    """The run's sampler is the keyword sampler built from the recipe's fields: same draws, same order."""
    from trainers.recipe import Recipe

    recipe = Recipe(category_mix={"text": 3.0, "portrait": 1.0}, t2i_edit_ratio=0.3, batch_size=7, seed=5)
    a = BatchSampler.from_recipe(prompt_pool, edit_pool, recipe)
    b = sampler(prompt_pool, edit_pool, mix={"text": 0.75, "portrait": 0.25}, ratio=0.3, batch_size=7, seed=5)
    for _ in range(20):
        x, y = a.sample(), b.sample()
        assert x.t2i.rows.tolist() == y.t2i.rows.tolist() and x.edit.rows.tolist() == y.edit.rows.tolist()
    assert a.composition() == b.composition()


def test_axis_arguments_are_keyword_only(prompt_pool, edit_pool):
    with pytest.raises(TypeError):
        BatchSampler(prompt_pool, edit_pool, {"text": 1.0}, 0.5, 16, 0)  # type: ignore[misc]
