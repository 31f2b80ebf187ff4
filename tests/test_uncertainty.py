"""Tests of trainers/tinyworld/uncertainty.py: the bootstrap SE of products of means, prompts resampled.

Run: .venv/bin/python -m pytest tests/test_uncertainty.py -q
"""

import math

import torch

from trainers.tinyworld.uncertainty import REPLICATES, group_replicates, score_se


def test_a_mean_s_bootstrap_se_matches_the_analytic_standard_error():
    values = torch.rand(400, generator=torch.Generator().manual_seed(1))
    reps = group_replicates([values], torch.arange(400), torch.Generator().manual_seed(0))
    assert reps.shape == (REPLICATES,)
    analytic = float(values.std()) / math.sqrt(400)
    assert abs(float(reps.std()) - analytic) < 0.15 * analytic  # the bootstrap SE's own error is ~5 %
    assert abs(float(reps.mean()) - float(values.mean())) < 3 * analytic


def test_a_prompt_s_samples_are_resampled_together():
    # Each prompt's 4 samples agree: the SE is that of 10 prompts, not of 40 independent items.
    per_prompt = torch.rand(10, generator=torch.Generator().manual_seed(2))
    values, prompt_of = per_prompt.repeat_interleave(4), torch.arange(10).repeat_interleave(4)
    clustered = group_replicates([values], prompt_of, torch.Generator().manual_seed(0)).std()
    naive = group_replicates([values], torch.arange(40), torch.Generator().manual_seed(0)).std()
    assert clustered > 1.5 * naive  # about sqrt(4) = 2 times larger


def test_constant_items_have_no_error_and_products_multiply():
    ones, halves = torch.ones(20), torch.full((20,), 0.5)
    reps = group_replicates([ones, halves], torch.arange(20), torch.Generator().manual_seed(0))
    assert torch.allclose(reps, torch.full((REPLICATES,), 0.5, dtype=torch.float64))


def test_score_se_names_each_group_and_the_aggregate_and_is_reproducible():
    g = torch.Generator().manual_seed(3)
    groups = {c: ((torch.rand(30, generator=g), torch.rand(30, generator=g)), torch.arange(30)) for c in ("a", "b")}
    se = score_se("t2i_score", groups)
    assert set(se) == {"t2i_score_se/a", "t2i_score_se/b", "t2i_score_se"}
    assert se == score_se("t2i_score", groups)  # its own fixed generator: the same every call
    # The aggregate is a mean of two independent groups: about half the root-sum-square of theirs.
    expected = math.hypot(se["t2i_score_se/a"], se["t2i_score_se/b"]) / 2
    assert abs(se["t2i_score_se"] - expected) < 0.2 * expected
    assert score_se("edit_score", {}) == {}
