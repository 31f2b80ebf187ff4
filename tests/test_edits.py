"""Edit pools: ground truth triples, exact preservation, disjoint phrasings. Run: pytest tests/test_edits.py"""

import collections

import numpy as np
import pytest
import torch

from trainers.tinyworld.edits import EDIT_CATEGORIES, EDIT_TYPES, PHRASINGS, build_edit_pool, edit_schema
from trainers.tinyworld.prompts import COLOUR_WORDS
from trainers.tinyworld.render import ATTRIBUTES, PALETTE, complement, render

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pools():
    return {split: build_edit_pool(240, seed=0, split=split).to_pylist() for split in ("train", "heldout")}


def own(row, key):
    return {a: row[key][a] for a in ATTRIBUTES[row["category"]]}


def test_schema_balance_and_determinism(pools):
    table = build_edit_pool(240, seed=0, split="train")
    assert table.schema == edit_schema() and table.to_pylist() == pools["train"]
    assert collections.Counter(r["edit_type"] for r in pools["train"]) == {t: 40 for t in EDIT_TYPES}
    assert all(r["category"] in EDIT_CATEGORIES[r["edit_type"]] for r in pools["train"])


def test_target_differs_from_source_exactly_in_edited(pools):
    for row in pools["train"] + pools["heldout"]:
        source, target = own(row, "source"), own(row, "target")
        changed = [a for a in ATTRIBUTES[row["category"]] if source[a] != target[a]]
        assert changed == row["edited"] and changed, row
        render(row["category"], target, row["image_seed"])  # target is valid


def test_recolours_change_only_the_recoloured_pixels(pools):
    def near(image, colour):
        return np.abs(image - (np.array(PALETTE[colour]) / 127.5 - 1)[:, None, None]).max(0) <= 0.05

    for row in pools["train"]:
        if not row["edit_type"].startswith("recolour"):
            continue
        (attribute,) = row["edited"]
        old, new = row["source"][attribute], row["target"][attribute]
        source = render(row["category"], own(row, "source"), row["image_seed"])
        target = render(row["category"], own(row, "target"), row["image_seed"])
        changed = np.abs(source - target).max(0) > 0
        explained = near(source, old) & near(target, new)
        if attribute == "sky":  # the sun is drawn in the sky's complement, so it follows the sky
            explained |= near(source, complement(old)) & near(target, complement(new))
        assert changed.any() and (explained == changed).all(), row


def test_mirror_and_invert_targets_are_the_flipped_and_negated_sources(pools):
    for row in pools["train"]:
        source = render(row["category"], own(row, "source"), row["image_seed"])
        target = render(row["category"], own(row, "target"), row["image_seed"])
        if row["edit_type"] == "mirror":
            np.testing.assert_array_equal(target, source[:, :, ::-1])
        elif row["edit_type"] == "invert":
            np.testing.assert_array_equal(target, -source)


def test_phrasings_are_disjoint_and_name_the_new_value(pools):
    for edit_type, splits in PHRASINGS.items():
        assert not set(splits["train"]) & set(splits["heldout"]), edit_type
    train_ids = {r["template"] for r in pools["train"]}
    heldout_ids = {r["template"] for r in pools["heldout"]}
    assert not train_ids & heldout_ids
    for row in pools["train"] + pools["heldout"]:
        if row["edit_type"].startswith("recolour"):
            (attribute,) = row["edited"]
            assert any(w in row["instruction"] for w in COLOUR_WORDS[row["target"][attribute]]), row
        if row["edit_type"] == "add_remove_sun" and row["target"]["sun"] != "none":
            assert row["target"]["sun"] in row["instruction"]


def test_sun_edits_both_add_and_remove(pools):
    suns = collections.Counter(
        r["target"]["sun"] == "none" for r in pools["train"] if r["edit_type"] == "add_remove_sun"
    )
    assert suns[True] > 10 and suns[False] > 10
