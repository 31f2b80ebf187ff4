"""orchestrator.search.dedup: the sweep's searcher never spends a trial on a point it already proposed.

No Ray cluster needed. Run: .venv/bin/python -m pytest tests/test_dedup.py -q
"""

from __future__ import annotations

import optuna
from ray.tune.search import Searcher

from orchestrator.search.dedup import DedupOptunaSearch
from orchestrator.search.entries import SearchEntry
from orchestrator.search.samplers import SamplerSpec, make_sampler
from orchestrator.search.space import define_by_run


def _searcher(entry: dict, sampler: str = "random", multi: bool = False) -> DedupOptunaSearch:
    search = {"t2i_edit_ratio": SearchEntry.model_validate(entry)}
    metric, mode = (["t2i_score", "edit_score"], ["max", "max"]) if multi else ("score", "max")
    return DedupOptunaSearch(
        space=define_by_run(search), metric=metric, mode=mode,
        sampler=make_sampler(SamplerSpec(name=sampler, seed=0), search),
    )


def test_a_repeated_point_is_asked_again_and_a_spent_space_ends_the_search():
    searcher = _searcher({"choice": [0.2, 0.5, 0.8]})
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    assert sorted(c["t2i_edit_ratio"] for c in configs) == [0.2, 0.5, 0.8]
    assert searcher.suggest("t3") == Searcher.FINISHED  # three points, all taken: no re-runs
    assert searcher.duplicates > 0
    repeats = [t for t in searcher._ot_study.trials if "duplicate_of" in t.user_attrs]
    assert {t.state for t in repeats} == {optuna.trial.TrialState.FAIL}  # twins still running: no values


def test_a_finished_twin_lends_its_values_to_the_repeat():
    searcher = _searcher({"float": [0.1, 0.3], "step": 0.1}, sampler="nsga2", multi=True)
    first = searcher.suggest("a")
    searcher.on_trial_complete("a", {"t2i_score": 0.6, "edit_score": 0.4, **first})
    seen = [first["t2i_edit_ratio"]]
    for trial_id in ("b", "c"):
        config = searcher.suggest(trial_id)
        seen.append(config["t2i_edit_ratio"])
        searcher.on_trial_complete(trial_id, {"t2i_score": 0.5, "edit_score": 0.5, **config})
    assert sorted(seen) == [0.1, 0.2, 0.3]
    repeats = [t for t in searcher._ot_study.trials if "duplicate_of" in t.user_attrs]
    assert len(repeats) == searcher.duplicates > 0
    for t in repeats:  # every twin had finished when its repeat came
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.values == searcher._values[t.user_attrs["duplicate_of"]]


def test_a_single_objective_keeps_a_scalar_value_and_ignores_failed_trials():
    searcher = _searcher({"choice": [0.2, 0.5]})
    a, b = searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", {"score": 0.7, **a})
    searcher.on_trial_complete("b", {"score": 0.1, **b}, error=True)
    assert searcher._values == {"a": 0.7}
