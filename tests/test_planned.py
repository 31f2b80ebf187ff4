"""The planned-runs searcher (orchestrator/search/planned.py): each config once, even across a restore.

Run: .venv/bin/python -m pytest tests/test_planned.py -q
"""

from __future__ import annotations

import json

from ray.tune.search import Searcher

from orchestrator.search.planned import PlannedSearch

CONFIGS = [{"x": 0.1, "seed": 1}, {"x": 0.1, "seed": 2}, {"x": 0.3, "seed": 1}]


def test_each_config_once_in_order_then_finished():
    searcher = PlannedSearch(CONFIGS)
    assert [searcher.suggest(f"t{i}") for i in range(3)] == CONFIGS
    assert searcher.suggest("t3") == Searcher.FINISHED


def test_a_restore_trusts_the_experiment_state_not_its_own_counter(tmp_path):
    """Saved after proposing two configs, but the experiment state (what Tune restores its trials
    from) knows only the first: the second is proposed again, the first never."""
    searcher = PlannedSearch(CONFIGS)
    searcher.suggest("t0"), searcher.suggest("t1")
    searcher.save(str(tmp_path / "searcher-state.json"))
    trial = json.dumps({"trial_id": "t0", "config": {"seed": 1, "x": 0.1}, "status": "TERMINATED"})
    (tmp_path / "experiment_state-2026.json").write_text(json.dumps({"trial_data": [[trial, "{}"]]}))
    restored = PlannedSearch()
    restored.restore(str(tmp_path / "searcher-state.json"))
    assert [restored.suggest("a"), restored.suggest("b"), restored.suggest("c")] == [CONFIGS[1], CONFIGS[2],
                                                                                   Searcher.FINISHED]
