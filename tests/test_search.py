"""The sweep's searcher never spends a trial on a recipe it already proposed (no Ray cluster needed).

Run: .venv/bin/python -m pytest tests/test_search.py -q
"""

from __future__ import annotations

import pickle
import threading

import optuna
import pytest
from ray.tune.search import Searcher

from orchestrator import space
from orchestrator.search import DedupOptunaSearch
from orchestrator.spec import SearchEntry


def _searcher(entry: dict, sampler: str = "random", multi: bool = False) -> DedupOptunaSearch:
    from orchestrator.spec import SamplerSpec

    search = {"t2i_edit_ratio": SearchEntry.model_validate(entry)}
    metric, mode = (["t2i_score", "edit_score"], ["max", "max"]) if multi else ("score", "max")
    return DedupOptunaSearch(
        space=space.build_space(search), metric=metric, mode=mode,
        sampler=space.make_sampler(SamplerSpec(name=sampler, seed=0), search),
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


# -- saving: Tune pickles the searcher (tuner.pkl, and its attributes in a search-state file) ----------


def _portable_searcher(sampler: str) -> DedupOptunaSearch:
    import functools

    from orchestrator.search import PortableSampler
    from orchestrator.spec import SamplerSpec

    search = {"t2i_edit_ratio": SearchEntry.model_validate({"float": [0.05, 0.95], "step": 0.05})}
    options = {"population_size": 4} if sampler == "nsga2" else {}
    factory = functools.partial(space.make_sampler, SamplerSpec(name=sampler, seed=0, options=options), search)
    return DedupOptunaSearch(
        space=space.build_space(search), metric=["t2i_score", "edit_score"], mode=["max", "max"],
        sampler=PortableSampler(factory),
    )


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random", "gp"])
def test_every_sampler_saves_restores_and_proposes_what_the_original_would(sampler, tmp_path):
    """NSGA-II holds a thread lock (Optuna 5.1): rebuilt on restore, the rest (random state) kept."""
    searcher = _portable_searcher(sampler)
    for i in range(6):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"t2i_score": 0.1 * i, "edit_score": 0.5 - 0.05 * i})
    searcher.check_savable(sampler)
    searcher.save_to_dir(str(tmp_path))  # what Tune writes into the experiment folder
    restored = DedupOptunaSearch()
    restored.restore_from_dir(str(tmp_path))
    assert len(restored._ot_study.trials) == len(searcher._ot_study.trials)
    assert restored._ot_study.sampler is not searcher._ot_study.sampler
    assert [restored.suggest(f"n{i}") for i in range(3)] == [searcher.suggest(f"n{i}") for i in range(3)]
    assert pickle.loads(pickle.dumps(searcher)).suggest("m") == searcher.suggest("m")  # tuner.pkl's way


def test_a_sampler_that_cannot_be_saved_is_a_clear_error():
    from orchestrator.search import SearcherNotSavable

    searcher = _searcher({"float": [0.1, 0.9], "step": 0.1})
    searcher._unsavable = threading.Lock()  # stands for any state pickle refuses
    with pytest.raises(SearcherNotSavable, match="the random sampler cannot be saved with the sweep"):
        searcher.check_savable("random")
