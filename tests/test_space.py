"""orchestrator.search.space: the define-by-run function, and the shipped search spaces sampled through it.

Run: .venv/bin/python -m pytest tests/test_space.py -q
"""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest

from orchestrator.search import trial_recipe
from orchestrator.search.entries import SearchEntry
from orchestrator.search.space import define_by_run
from orchestrator.spec import load_spec
from orchestrator.sweep.dry_run import sample_params

optuna.logging.set_verbosity(optuna.logging.WARNING)
SEARCH_SPACES = sorted((Path(__file__).parent.parent / "search_spaces").glob("*.yaml"))


def _search(**entries: dict) -> dict[str, SearchEntry]:
    return {key.replace("__", "."): SearchEntry.model_validate(value) for key, value in entries.items()}


def _draw(search: dict[str, SearchEntry], n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    sample = define_by_run(search)
    return [sample(study.ask()) for _ in range(n)]


def test_entries_are_asked_in_spec_order():
    search = _search(nfe={"int": [2, 4]}, category_mix={"simplex": ["a", "b"]}, t2i_edit_ratio={"float": [0.1, 0.9]})
    [params] = _draw(search, 1)
    assert list(params) == ["nfe", "category_mix.raw.a", "category_mix.raw.b", "category_mix.a", "category_mix.b",
                            "t2i_edit_ratio"]


def test_conditionals_appear_only_when_their_condition_holds():
    search = _search(
        teacher_switch_step={"int": [0, 4]},
        specialist_weight={"float": [0.3, 1.0], "when": {"teacher_switch_step": [1, 2, 3]}},
        mixed_precision={"choice": ["no", "bf16"]},
        ema_decay={"float": [0.9, 0.99], "when": {"mixed_precision": "bf16"}},
    )
    draws = _draw(search, 300)
    for d in draws:
        assert ("specialist_weight" in d) == (d["teacher_switch_step"] in (1, 2, 3))
        assert ("ema_decay" in d) == (d["mixed_precision"] == "bf16")
    assert any("specialist_weight" in d for d in draws) and any("specialist_weight" not in d for d in draws)


def test_the_function_pickles_and_samples_the_same_after():
    """Ray's OptunaSearch saves it with the searcher's state (--resume)."""
    sample = define_by_run(_search(t2i_edit_ratio={"float": [0.1, 0.9]}, nfe={"choice": [2, 4]}))
    again = pickle.loads(pickle.dumps(sample))
    study_a = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    study_b = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    assert [sample(study_a.ask()) for _ in range(4)] == [again(study_b.ask()) for _ in range(4)]


@pytest.mark.parametrize("path", SEARCH_SPACES, ids=lambda p: p.name)
def test_shipped_search_space_validates_and_samples(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert path.read_text().startswith("# Question:")  # each says what it answers
    for params in sample_params(spec, 8):
        recipe = trial_recipe(spec.base, params)
        assert recipe.steps <= 300  # small enough for the CPU sweep


def test_all_four_search_spaces_ship():
    assert {p.stem for p in SEARCH_SPACES} >= {"task_ratio", "data_mix", "teacher_switch", "joint"}
