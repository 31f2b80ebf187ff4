"""Metrics against real renders (the ceiling) and against degraded images. Run: pytest tests/test_metrics.py"""

import itertools
import math

import numpy as np
import pytest
import torch

from trainers.tinyworld.edits import EDIT_TYPES, build_edit_pool
from trainers.tinyworld.judge import load_judge
from trainers.tinyworld.metrics import (
    combine,
    evaluate_edits,
    evaluate_t2i,
    expected_entropy,
    frechet_distance,
    plugin_entropy,
    purity,
)
from trainers.tinyworld.prompts import build_prompt_pool, sample_images
from trainers.tinyworld.render import ATTRIBUTES, CATEGORIES, render_batch, sample_attributes

torch.set_num_threads(1)
K = 8


@pytest.fixture(scope="module")
def judge():
    return load_judge()


@pytest.fixture(scope="module")
def prompts():
    return build_prompt_pool(90, seed=3, split="heldout").to_pylist()


@pytest.fixture(scope="module")
def real(prompts):
    return sample_images(prompts, K, seed=11)[0]


def own(row, key):
    return {a: row[key][a] for a in ATTRIBUTES[row["category"]]}


@pytest.mark.parametrize("resolution", [16, 32])
def test_real_renders_are_pure(resolution):
    rng = np.random.default_rng(0)
    categories = [CATEGORIES[i % 3] for i in range(60)]
    images = render_batch(categories, [sample_attributes(c, rng) for c in categories], range(60), resolution)
    assert torch.all(purity(images) == 1.0)


def test_noise_and_blends_are_impure(real):
    noise = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert purity(noise).mean() < 0.05
    blends = (real[:64] + real[64:128]) / 2  # what a few-step sampler does to two modes
    assert purity(blends).mean() < 0.75
    blurred = torch.nn.functional.avg_pool2d(real[:64], 3, stride=1, padding=1, count_include_pad=False)
    assert purity(blurred).mean() < 0.8


def test_expected_entropy_is_exact():
    assert expected_entropy(1, 5) == 0.0 and expected_entropy(7, 1) == 0.0
    assert expected_entropy(2, 2) == pytest.approx(0.5 * math.log(2))  # half the time two distinct values
    # Brute force over all m^k sequences for a small case.
    m, k = 3, 4
    brute = np.mean(
        [plugin_entropy(torch.tensor([seq]), m).item() for seq in itertools.product(range(m), repeat=k)]
    )
    assert expected_entropy(m, k) == pytest.approx(brute, rel=1e-6)


def test_real_renders_score_at_the_ceiling(judge, prompts, real):
    metrics = evaluate_t2i(real, prompts, judge, K, seed=12)
    assert metrics["purity"] == 1.0
    assert metrics["adherence"] >= 0.98 and metrics["t2i_score"] >= 0.98
    for c in CATEGORIES:
        assert metrics[f"diversity/{c}"] == pytest.approx(1.0, abs=0.1), c
    assert metrics["adherence_all"] >= 0.97


def test_degraded_samples_score_lower_than_real_ones(judge, prompts, real):
    baseline = evaluate_t2i(real, prompts, judge, K, seed=12)
    collapsed = real.view(len(prompts), K, 3, 16, 16)[:, :1].expand(-1, K, -1, -1, -1).reshape(real.shape)
    metrics = evaluate_t2i(collapsed, prompts, judge, K, seed=12)
    assert metrics["diversity"] == 0.0 and metrics["adherence"] >= 0.98
    assert metrics["fd"] > 2 * baseline["fd"]  # the fd sees the lost modes too
    blends = evaluate_t2i((real + real.roll(1, 0)) / 2, prompts, judge, K, seed=12)
    assert blends["purity"] < 0.75 and blends["t2i_score"] < 0.75 and blends["fd"] > 2 * baseline["fd"]
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    noisy = evaluate_t2i(noise, prompts, judge, K, seed=12)
    assert noisy["fd"] > 10 * baseline["fd"] and noisy["purity"] < 0.05 and noisy["t2i_score"] < 0.05


def test_scores_carry_their_bootstrap_standard_errors(judge, prompts, real):
    blends = evaluate_t2i((real + real.roll(1, 0)) / 2, prompts, judge, K, seed=12)
    groups = [c for c in CATEGORIES if f"t2i_score/{c}" in blends]
    assert {f"t2i_score_se/{c}" for c in groups} | {"t2i_score_se"} <= set(blends)
    assert all(blends[f"t2i_score_se/{c}"] > 0 for c in groups)
    # The mean over categories has a smaller error than any one category's score.
    assert blends["t2i_score_se"] < max(blends[f"t2i_score_se/{c}"] for c in groups)
    ceiling = evaluate_t2i(real, prompts, judge, K, seed=12)
    assert ceiling["t2i_score_se"] < blends["t2i_score_se"]  # scores near 1 barely move under resampling


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 2, generator=g) * torch.tensor([1.0, 2.0])
    b = torch.randn(20000, 2, generator=g) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, 0.0])
    closed_form = 1.0 + (1.0 - 3.0) ** 2 + (2.0 - 0.5) ** 2  # |Δμ|² + Σ (σa − σb)²
    assert frechet_distance(a, b) == pytest.approx(closed_form, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_edit_metrics_on_targets_and_on_unedited_sources(judge):
    rows = build_edit_pool(120, seed=4, split="heldout").to_pylist()
    seeds = [r["image_seed"] for r in rows]
    categories = [r["category"] for r in rows]
    targets = render_batch(categories, [own(r, "target") for r in rows], seeds)
    sources = render_batch(categories, [own(r, "source") for r in rows], seeds)
    good = evaluate_edits(targets, rows, judge)
    assert set(f"edit_score/{t}" for t in EDIT_TYPES) <= set(good)
    assert good["edit_adherence"] >= 0.98 and good["preservation"] >= 0.98 and good["edit_purity"] == 1.0
    assert set(f"edit_score_se/{t}" for t in EDIT_TYPES) | {"edit_score_se"} <= set(good)
    lazy = evaluate_edits(sources, rows, judge)  # returns the source unchanged
    assert lazy["edit_adherence"] < 0.05 and lazy["preservation"] >= 0.98 and lazy["edit_score"] < 0.05


def test_combine_and_shape_errors(judge, prompts, real):
    t2i = {"t2i_score": 0.8}
    assert combine(t2i, {"edit_score": 0.4})["score"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="samples_per_prompt"):
        evaluate_t2i(real[:-1], prompts, judge, K)
    with pytest.raises(ValueError, match="one per edit row"):
        evaluate_edits(real[:3], build_edit_pool(6, seed=0, split="train"), judge)
