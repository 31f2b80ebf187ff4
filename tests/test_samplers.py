"""orchestrator.search.samplers: the sampler registry, the `sampler:` section's checks, saving a sampler.

Run: .venv/bin/python -m pytest tests/test_samplers.py -q
"""

from __future__ import annotations

import functools
import pickle
import threading
import typing

import optuna
import pytest
from pydantic import ValidationError

from orchestrator.search.dedup import DedupOptunaSearch
from orchestrator.search.entries import SearchEntry
from orchestrator.search.samplers import (
    SAMPLERS,
    PortableSampler,
    SamplerSpec,
    SearcherNotSavable,
    check_savable,
    grid_space,
    make_sampler,
    sampler_problems,
)
from orchestrator.search.space import define_by_run

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _search(**entries: dict) -> dict[str, SearchEntry]:
    return {key.replace("__", "."): SearchEntry.model_validate(value) for key, value in entries.items()}


def _draw(search: dict[str, SearchEntry], n: int, sampler: str = "random", seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=make_sampler(SamplerSpec(name=sampler, seed=seed), search))
    sample = define_by_run(search)
    return [sample(study.ask()) for _ in range(n)]


def _problems(search: dict[str, SearchEntry], trials: int = 4, **sampler) -> list[tuple[str, str]]:
    return [(p.where, p.message) for p in sampler_problems(SamplerSpec(**sampler), search, trials)]


def test_the_spec_names_exactly_the_registered_samplers():
    assert typing.get_args(SamplerSpec.model_fields["name"].annotation) == tuple(SAMPLERS)
    with pytest.raises(ValidationError, match="'tpe', 'nsga2', 'random', 'grid' or 'gp'"):
        SamplerSpec(name="cmaes")
    for name in SAMPLERS:
        if name != "grid":
            assert isinstance(make_sampler(SamplerSpec(name=name), _search(x={"float": [0, 1]})), SAMPLERS[name])


def test_same_seed_same_draws_other_seed_other_draws():
    search = _search(t2i_edit_ratio={"float": [0.1, 0.9]}, category_mix={"simplex": ["a", "b"]})
    for sampler in SAMPLERS:
        if sampler == "grid":
            continue
        assert _draw(search, 5, sampler, seed=1) == _draw(search, 5, sampler, seed=1)
    assert _draw(search, 5, "tpe", seed=1) != _draw(search, 5, "tpe", seed=2)


def test_grid_sampler_enumerates_the_grid():
    search = _search(
        t2i_edit_ratio={"grid": [0.3, 0.5, 0.7]},
        teacher_switch_step={"int": [2, 4]},
        mixed_precision={"choice": ["no", "bf16"]},
    )
    draws = _draw(search, 18, sampler="grid")
    seen = {(d["t2i_edit_ratio"], d["teacher_switch_step"], d["mixed_precision"]) for d in draws}
    assert len(seen) == 18  # every point once, none repeated
    assert grid_space(search)["teacher_switch_step"] == [2, 3, 4]


def test_a_used_up_grid_closes_its_last_trial_under_ask_and_tell():
    """Tune tells Optuna each result outside study.optimize: the grid's own stop must not raise there."""
    search = _search(critic_updates={"grid": [1, 2]})
    study = optuna.create_study(sampler=PortableSampler(lambda: make_sampler(SamplerSpec(name="grid"), search)))
    sample = define_by_run(search)
    for value in (0.5, 0.7):
        trial = study.ask()
        sample(trial)
        study.tell(trial, value)  # the second tell uses up the grid
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert sorted(t.params["critic_updates"] for t in study.trials) == [1, 2]


def test_options_are_plain_keyword_arguments_of_the_sampler():
    search = _search(x={"float": [0, 1]})
    assert _problems(search, name="tpe", options={"n_startup_trials": 3}) == []
    assert _problems(search, name="tpe", options={"n_startup_trails": 3, "seed": 1, "n_ei_candidates": "many"}) == [
        ("sampler.options.n_startup_trails",
         "unknown option 'n_startup_trails' of the tpe sampler; did you mean 'n_startup_trials'?"),
        ("sampler.options.seed", "unknown option 'seed' of the tpe sampler; set it as sampler.seed"),
        ("sampler.options.n_ei_candidates", "expected int, found 'many'"),
    ]
    [(where, message)] = _problems(search, name="nsga2", options={"mutation_prob": 0.5, "crossover": 1})
    assert where == "sampler.options.crossover" and message.startswith("expected an option taking plain data")
    [(where, message)] = _problems(search, name="nsga2", options={"population_size": 1})
    assert where == "sampler.options" and message.startswith("the nsga2 sampler refused its options: ")


def test_the_grid_sampler_needs_a_discrete_unconditional_search_big_enough():
    assert _problems(_search(a={"int": [0, 2]}, b={"choice": [1, 2]}), trials=6, name="grid") == []
    assert _problems(_search(a={"float": [0.1, 1.0], "log": True}, b={"choice": [1], "when": {"a": 1}}), name="grid") == [
        ("search.a.float", "expected grid, choice, int or float with step for the grid sampler, found float with log"),
        ("search.b.when", "expected no conditions with the grid sampler, found when"),
    ]
    assert _problems(_search(a={"int": [0, 2]}), trials=4, name="grid") == [
        ("budget.trials", "expected <= 3 (the grid's size) with the grid sampler, found 4")
    ]


# -- saving: Tune pickles the searcher (tuner.pkl, and its attributes in a search-state file) ----------


def _portable_searcher(sampler: str) -> DedupOptunaSearch:
    search = _search(t2i_edit_ratio={"float": [0.05, 0.95], "step": 0.05})
    options = {"population_size": 4} if sampler == "nsga2" else {}
    factory = functools.partial(make_sampler, SamplerSpec(name=sampler, seed=0, options=options), search)
    return DedupOptunaSearch(
        space=define_by_run(search), metric=["t2i_score", "edit_score"], mode=["max", "max"],
        sampler=PortableSampler(factory),
    )


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "random", "gp"])
def test_every_sampler_saves_restores_and_proposes_what_the_original_would(sampler, tmp_path):
    """NSGA-II holds a thread lock (Optuna 5.1): rebuilt on restore, the rest (random state) kept."""
    searcher = _portable_searcher(sampler)
    for i in range(6):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"t2i_score": 0.1 * i, "edit_score": 0.5 - 0.05 * i})
    check_savable(searcher, sampler)
    searcher.save_to_dir(str(tmp_path))  # what Tune writes into the experiment folder
    restored = DedupOptunaSearch()
    restored.restore_from_dir(str(tmp_path))
    assert len(restored._ot_study.trials) == len(searcher._ot_study.trials)
    assert restored._ot_study.sampler is not searcher._ot_study.sampler
    assert [restored.suggest(f"n{i}") for i in range(3)] == [searcher.suggest(f"n{i}") for i in range(3)]
    assert pickle.loads(pickle.dumps(searcher)).suggest("m") == searcher.suggest("m")  # tuner.pkl's way


def test_a_sampler_that_cannot_be_saved_is_a_clear_error():
    searcher = _portable_searcher("random")
    searcher._unsavable = threading.Lock()  # stands for any state pickle refuses
    with pytest.raises(SearcherNotSavable, match="the random sampler cannot be saved with the sweep"):
        check_savable(searcher, "random")
