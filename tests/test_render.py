"""Renderer of the tiny world: determinism, constraints, exact mirror/invert. Run: pytest tests/test_render.py"""

import numpy as np
import pytest
import torch

from trainers.tinyworld.render import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    CATEGORIES,
    CONSTRAINTS,
    GLYPHS,
    PALETTE,
    complement,
    glyph_mask,
    render,
    render_batch,
    sample_attributes,
)

torch.set_num_threads(1)


def test_public_tables_are_consistent():
    assert CATEGORIES == ("landscape", "portrait", "text")
    assert set(ATTRIBUTES) == set(CATEGORIES)
    assert len(PALETTE) == 8 and len(GLYPHS) == 36
    assert set(ATTRIBUTE_NAMES) == {a for attrs in ATTRIBUTES.values() for a in attrs}


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("resolution", [16, 32])
def test_render_is_deterministic_in_range_and_shaped(category, resolution):
    attrs = sample_attributes(category, np.random.default_rng(0))
    image = render(category, attrs, seed=3, resolution=resolution)
    assert image.shape == (3, resolution, resolution) and image.dtype == np.float32
    assert image.min() >= -1 and image.max() <= 1
    np.testing.assert_array_equal(image, render(category, attrs, seed=3, resolution=resolution))
    others = [render(category, attrs, seed=s, resolution=resolution) for s in range(4, 12)]
    assert any(not np.array_equal(image, o) for o in others), "seeds must jitter the render"


def test_complement_is_an_involution_on_the_palette():
    for colour in PALETTE:
        assert complement(colour) != colour
        assert complement(complement(colour)) == colour


@pytest.mark.parametrize("category", CATEGORIES)
def test_sampling_respects_constraints_and_fixed_values(category):
    rng = np.random.default_rng(1)
    for _ in range(300):
        attrs = sample_attributes(category, rng)
        assert all(attrs[a] != attrs[b] for a, b in CONSTRAINTS[category])
    first = next(iter(ATTRIBUTES[category]))
    value = ATTRIBUTES[category][first][1]
    assert all(sample_attributes(category, rng, {first: value})[first] == value for _ in range(20))


def test_invalid_attributes_raise_errors_that_name_the_field():
    good = {"sky": "blue", "ground": "green", "sun": "left"}
    with pytest.raises(ValueError, match="landscape.sky"):
        render("landscape", {**good, "sky": "purple"})
    with pytest.raises(ValueError, match="sky and ground must differ"):
        render("landscape", {**good, "ground": "blue"})
    with pytest.raises(ValueError, match="missing \\['sun'\\]"):
        render("landscape", {"sky": "blue", "ground": "green"})
    with pytest.raises(ValueError, match="category"):
        render("seascape", good)
    with pytest.raises(ValueError, match="resolution"):
        render("landscape", good, resolution=24)
    with pytest.raises(ValueError, match="hair and background must differ"):
        sample_attributes("portrait", np.random.default_rng(0), {"hair": "red", "background": "red"})


def test_mirrored_sun_is_an_exact_horizontal_flip():
    for seed in range(10):
        left = render("landscape", {"sky": "blue", "ground": "green", "sun": "left"}, seed)
        right = render("landscape", {"sky": "blue", "ground": "green", "sun": "right"}, seed)
        np.testing.assert_array_equal(right, left[:, :, ::-1])


@pytest.mark.parametrize("category", ["landscape", "text"])
def test_colour_inversion_is_an_exact_negative(category):
    rng = np.random.default_rng(2)
    for seed in range(10):
        attrs = sample_attributes(category, rng)
        inverted = {k: complement(v) if v in PALETTE else v for k, v in attrs.items()}
        np.testing.assert_array_equal(render(category, inverted, seed), -render(category, attrs, seed))


def test_sun_is_drawn_in_the_complement_of_the_sky_and_visible():
    image = render("landscape", {"sky": "blue", "ground": "green", "sun": "left"}, seed=0)
    yellow = np.array([1.0, 1.0, -1.0])[:, None]
    pixels = image.reshape(3, -1)
    assert (np.abs(pixels - yellow).max(0) < 0.1).sum() >= 9


@pytest.mark.parametrize("resolution", [16, 32])
def test_glyph_masks_are_distinct_and_fit(resolution):
    masks = {g: glyph_mask(g, resolution) for g in GLYPHS}
    assert all(m.shape[0] <= resolution - 2 * resolution // 16 for m in masks.values())
    padded = np.stack(
        [np.pad(m, ((0, resolution - m.shape[0]), (0, resolution - m.shape[1]))) for m in masks.values()]
    )
    flat = padded.reshape(len(GLYPHS), -1)
    distance = (flat[:, None] != flat[None]).sum(-1) + np.eye(len(GLYPHS), dtype=int) * 10**6
    assert distance.min() >= 3  # every glyph differs from every other by several pixels


def test_render_batch_stacks_and_checks_lengths():
    rng = np.random.default_rng(3)
    attrs = [sample_attributes(c, rng) for c in CATEGORIES]
    batch = render_batch(CATEGORIES, attrs, [0, 1, 2])
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    np.testing.assert_array_equal(batch[1].numpy(), render("portrait", attrs[1], 1))
    with pytest.raises(ValueError, match="same length"):
        render_batch(CATEGORIES, attrs, [0, 1])
