"""orchestrator.metrics: the metric vocabulary of a world and the headline scores.

(trainers' metrics are tested in tests/test_metrics.py.)
Run: .venv/bin/python -m pytest tests/test_orchestrator_metrics.py -q
"""

from __future__ import annotations

import pytest

from orchestrator import metrics
from trainers.world import world_info


def test_helpers_default_to_the_tiny_world():
    assert metrics.better("fd") == "min" and metrics.better("t2i_score/text") == "max"
    assert metrics.is_known_metric("edit_score/mirror") and not metrics.is_known_metric("edit_score/landscape")
    assert metrics.default_world() is metrics.default_world() and metrics.default_world().name == "tiny"
    with pytest.raises(KeyError):
        metrics.better("clip")


def test_metric_problems_name_the_world_and_a_close_name():
    world = world_info("tiny")
    assert metrics.metric_problem("score", world) is None
    assert metrics.metric_problem("t2i_score/portrait", world) is None
    assert metrics.metric_problem("scor", world) == (
        "unknown metric 'scor' of world 'tiny'; did you mean 'score'? (or t2i_score/<category>, edit_score/<edit_type>)"
    )
    assert metrics.metric_problem("fd/text", world).startswith("unknown metric 'fd/text' of world 'tiny'; ")
    assert metrics.metric_problem("t2i_score/forest", world) == (
        "expected a category in t2i_score/<category> of world 'tiny' (landscape, portrait, text), found 'forest'"
    )


def test_headline_scores_are_world_metrics_that_improve_upwards():
    assert metrics.SCORES == ("score", "t2i_score", "edit_score")
    assert all(metrics.better(m) == "max" for m in metrics.SCORES)
