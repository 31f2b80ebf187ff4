"""The seed check: re-trained candidates ranked by their mean, promoted only past the seed noise.

Run: .venv/bin/python -m pytest tests/test_promote_seeds.py -q

Pure functions on hand-written per-seed metrics: no training.
"""

from __future__ import annotations

import pytest

from orchestrator.promote.seeds import SeedStats, run_seeds, seed_check
from trainers.recipe import Recipe


def _stats(trial_id: str, values: list[float]) -> SeedStats:
    return SeedStats(trial_id, [{"score": v} for v in values])


def test_seed_check_needs_a_lead_beyond_the_noise():
    decisive = seed_check([_stats("x", [0.40, 0.42]), _stats("y", [0.50, 0.51])], "score", "max")
    assert decisive.leader.trial_id == "y" and decisive.runner_up.trial_id == "x"
    assert decisive.lead == pytest.approx(0.095) and decisive.noise == pytest.approx(0.0141, abs=1e-4)
    assert decisive.decisive
    lucky = seed_check([_stats("x", [0.50, 0.40]), _stats("y", [0.46, 0.47])], "score", "max")
    assert lucky.leader.trial_id == "y" and lucky.lead == pytest.approx(0.015) and not lucky.decisive
    lower = seed_check([_stats("x", [3.0, 3.1]), _stats("y", [5.0, 5.1])], "score", "min")
    assert lower.leader.trial_id == "x" and lower.decisive
    alone = seed_check([_stats("x", [0.1, 0.3])], "score", "max")
    assert alone.decisive and alone.runner_up is None and alone.lead == 0.0  # nothing to beat


def test_one_seed_has_no_noise():
    stats = _stats("x", [0.25])
    assert stats.mean("score") == 0.25 and stats.std("score") == 0.0


def test_summary_is_the_cards_record():
    check = seed_check([_stats("x", [0.40, 0.42]), _stats("y", [0.50, 0.52])], "score", "max")
    summary = check.summary(["score"])
    assert summary["metric"] == "score" and summary["seeds"] == 2 and summary["decisive"] is True
    assert list(summary["candidates"]) == ["y", "x"]  # best mean first
    assert summary["candidates"]["x"]["score"] == [pytest.approx(0.41), pytest.approx(0.0141, abs=1e-4)]
    assert summary["lead"] == check.lead and summary["noise"] == check.noise


def test_run_seeds_trains_consecutive_seeds():
    seen = []
    recipes = {"x": Recipe(seed=5), "y": Recipe(seed=0, nfe=2)}
    stats = run_seeds(recipes, 3, lambda t, r: seen.append((t, r.seed, r.nfe)) or {"score": r.seed})
    assert seen == [("x", 5, 4), ("x", 6, 4), ("x", 7, 4), ("y", 0, 2), ("y", 1, 2), ("y", 2, 2)]
    assert [s.trial_id for s in stats] == ["x", "y"] and stats[0].mean("score") == 6
