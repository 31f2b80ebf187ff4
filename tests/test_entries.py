"""orchestrator.search.entries: one class per search kind, with its checks, domain, extreme points and sampling.

Run: .venv/bin/python -m pytest tests/test_entries.py -q
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from pydantic import ValidationError

from orchestrator.search import raw_key
from orchestrator.search.entries import (
    KINDS,
    ChoiceEntry,
    FloatEntry,
    GridEntry,
    IntEntry,
    SearchEntry,
    SimplexEntry,
    simplex_weights,
)
from orchestrator.spec_base import pydantic_problems

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _entry(raw: dict) -> SearchEntry:
    return SearchEntry.model_validate(raw)


def _problems(raw) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        SearchEntry.model_validate(raw)
    return [(p.where, p.message) for p in pydantic_problems(info.value, SearchEntry)]


def _draw(entry: SearchEntry, key: str, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [entry.suggest(study.ask(), key) for _ in range(n)]


def test_a_mapping_validates_as_the_one_kind_it_names():
    assert type(_entry({"float": [0.1, 0.9]})) is FloatEntry
    assert type(_entry({"int": [0, 4], "step": 2})) is IntEntry
    assert type(_entry({"choice": ["no", "bf16"]})) is ChoiceEntry
    assert type(_entry({"grid": [1, 2]})) is GridEntry
    assert type(_entry({"simplex": ["a", "b"], "float": None})) is SimplexEntry  # an explicit null is no kind
    assert list(KINDS) == ["float", "int", "choice", "simplex", "grid"]
    assert all(cls.kind == name for name, cls in KINDS.items())


def test_an_entry_dumps_as_written():
    entry = _entry({"float": [0.1, 0.9], "step": 0.1, "when": {"nfe": 4}})
    assert entry.model_dump(mode="json", by_alias=True, exclude_defaults=True) == {
        "float": [0.1, 0.9], "step": 0.1, "when": {"nfe": 4}
    }


@pytest.mark.parametrize(
    "raw, problems",
    [
        ({"float": [0.9, 0.1]}, [("float", "expected lower bound < upper bound, found [0.9, 0.1]")]),
        ({"int": [0, 2, 4]}, [("int", "expected [lower, upper], found [0, 2, 4]")]),
        ({"float": [0, 6], "log": True}, [("log", "expected a lower bound > 0 for a log scale, found [0.0, 6.0]")]),
        ({"float": [0.1, 0.9], "step": 0.3}, [("step", "expected (upper - lower) to be a multiple of the step, found [0.1, 0.9] step 0.3")]),
        ({"int": [0, 4], "step": 0.5}, [("step", "expected an integer step for an int range, found 0.5")]),
        ({"int": [1, 4], "log": True, "step": 1}, [("step", "expected either log or step, found both")]),
        ({"choice": []}, [("choice", "expected at least one value, found []")]),
        ({"grid": [1, 1]}, [("grid", "expected distinct values, found [1, 1]")]),
        ({"choice": [[1]]}, [("choice", "expected plain values (str, number, bool, null), found [1]")]),
        ({"simplex": ["a", "a.b"]}, [("simplex", "expected at least 2 distinct names (no dots), found ['a', 'a.b']")]),
        ({"choice": [1, 2], "log": True}, [("", "expected log/step only with float or int, found them with choice")]),
        ({"float": [0.1, 0.9], "when": {}}, [("when", "expected {param: value or [values]}, found {}")]),
        ({"float": [0.1, 0.9], "stepp": 0.1}, [("stepp", "unknown key 'stepp'; did you mean 'step'?")]),
        ({"steps": 1}, [("steps", "unknown key 'steps'; did you mean 'step'?")]),
        ({"step": 0.1}, [("", "expected exactly one of float, int, choice, simplex, grid, found none")]),
        ({"float": [0.1, 0.9], "choice": [1]}, [("", "expected exactly one of float, int, choice, simplex, grid, found float, choice")]),
        ({"float": [0.9, 0.1], "choice": [], "step": -1}, [  # several kinds: every part's problems, in key order
            ("float", "expected lower bound < upper bound, found [0.9, 0.1]"),
            ("choice", "expected at least one value, found []"),
            ("step", "expected a step > 0, found -1.0"),
        ]),
        ({"float": [0, 6], "grid": [1], "log": True}, [("log", "expected a lower bound > 0 for a log scale, found [0.0, 6.0]")]),
        (4, [("", "expected a mapping, found 4")]),
    ],
)
def test_problems_of_an_entry(raw, problems):
    assert _problems(raw) == problems


def test_domains_are_every_value_or_none():
    assert _entry({"int": [2, 8], "step": 2}).domain() == [2, 4, 6, 8]
    assert _entry({"int": [1, 8], "log": True}).domain() is None
    assert _entry({"float": [0.1, 0.9], "step": 0.1}).domain() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert _entry({"float": [0.1, 0.9]}).domain() is None
    assert _entry({"choice": ["no", "bf16"]}).domain() == ["no", "bf16"]
    assert _entry({"simplex": ["a", "b"]}).domain() is None


def test_extreme_points_are_bounds_values_and_corners():
    assert _entry({"int": [0, 4]}).extreme_points("k") == [("lower bound 0", {"k": 0}), ("upper bound 4", {"k": 4})]
    assert _entry({"grid": ["a", 2]}).extreme_points("k") == [("grid 'a'", {"k": "a"}), ("grid 2", {"k": 2})]
    assert _entry({"simplex": ["a", "b"]}).extreme_points("mix") == [
        ("corner a", {"mix.a": 1.0, "mix.b": 0.0}),
        ("corner b", {"mix.a": 0.0, "mix.b": 1.0}),
    ]


def test_kinds_fit_recipe_field_types():
    assert [k for k, cls in KINDS.items() if cls.fits({float, type(None)})] == ["float", "int", "choice", "grid"]
    assert [k for k, cls in KINDS.items() if cls.fits({int})] == ["int", "choice", "grid"]
    assert [k for k, cls in KINDS.items() if cls.fits({bool})] == ["choice", "grid"]


def test_ints_and_floats_respect_bounds_step_and_log():
    steps = _draw(_entry({"int": [10, 50], "step": 10}), "steps", 200)
    assert {d["steps"] for d in steps} == {10, 20, 30, 40, 50}
    nfe = _draw(_entry({"int": [1, 8], "log": True}), "nfe", 200)
    assert {d["nfe"] for d in nfe} <= set(range(1, 9)) and all(isinstance(d["nfe"], int) for d in nfe)
    ratios = {d["r"] for d in _draw(_entry({"float": [0.1, 0.9], "step": 0.1}), "r", 400)}
    assert ratios == {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}  # grid values, no float noise
    scales = np.array([d["g"] for d in _draw(_entry({"float": [1.5, 6.0], "log": True}), "g", 400)])
    assert scales.min() >= 1.5 and scales.max() <= 6.0
    # log scale: the median sits near the geometric mean sqrt(1.5 * 6) = 3, not the midpoint 3.75
    assert abs(np.median(scales) - 3.0) < 0.3


def test_simplex_is_uniform_on_the_simplex():
    """Dirichlet(1,1,1): weights >= 0 summing to 1, mean 1/3 each, marginal w_1 ~ Beta(1, 2)."""
    names = ("landscape", "portrait", "text")
    draws = _draw(_entry({"simplex": list(names)}), "category_mix", 2000)
    weights = np.array([[d[f"category_mix.{n}"] for n in names] for d in draws])
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(weights.mean(axis=0), 1 / 3, atol=0.02)
    # Kolmogorov-Smirnov against Beta(1, 2), whose CDF is 1 - (1 - x)^2; 1.63/sqrt(n) is the 1% level.
    x = np.sort(weights[:, 0])
    ecdf_hi, ecdf_lo = np.arange(1, len(x) + 1) / len(x), np.arange(len(x)) / len(x)
    cdf = 1 - (1 - x) ** 2
    assert max(np.abs(ecdf_hi - cdf).max(), np.abs(ecdf_lo - cdf).max()) < 1.63 / math.sqrt(len(x))
    # The raw uniform draws are kept (Optuna's params) and reproduce the weights.
    raw = [draws[0][raw_key("category_mix", n)] for n in names]
    assert simplex_weights(raw) == pytest.approx(list(weights[0]))


def test_simplex_weights_edge_cases():
    assert simplex_weights([1.0, 1.0]) == [0.5, 0.5]  # all u = 1: the centre, not 0/0
    assert all(math.isfinite(w) for w in simplex_weights([0.0, 0.5]))
