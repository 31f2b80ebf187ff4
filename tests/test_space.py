"""orchestrator.space: simplex sampling, bounds/step/log, conditionals, grids, shipped search spaces.

Run: .venv/bin/python -m pytest tests/test_space.py -q
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest

from orchestrator import space
from orchestrator.spec import SamplerSpec, SearchEntry, load_spec
from orchestrator.sweep import sample_params

optuna.logging.set_verbosity(optuna.logging.WARNING)
SEARCH_SPACES = sorted((Path(__file__).parent.parent / "search_spaces").glob("*.yaml"))


def _search(**entries: dict) -> dict[str, SearchEntry]:
    return {key.replace("__", "."): SearchEntry.model_validate(value) for key, value in entries.items()}


def _draw(search: dict[str, SearchEntry], n: int, sampler: str = "random", seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=space.make_sampler(SamplerSpec(name=sampler, seed=seed), search))
    sample = space.build_space(search)
    return [sample(study.ask()) for _ in range(n)]


def test_simplex_is_uniform_on_the_simplex():
    """Dirichlet(1,1,1): weights >= 0 summing to 1, mean 1/3 each, marginal w_1 ~ Beta(1, 2)."""
    draws = _draw(_search(category_mix={"simplex": ["landscape", "portrait", "text"]}), 2000)
    weights = np.array([[d[f"category_mix.{n}"] for n in ("landscape", "portrait", "text")] for d in draws])
    assert (weights >= 0).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(weights.mean(axis=0), 1 / 3, atol=0.02)
    # Kolmogorov-Smirnov against Beta(1, 2), whose CDF is 1 - (1 - x)^2; 1.63/sqrt(n) is the 1% level.
    x = np.sort(weights[:, 0])
    ecdf_hi, ecdf_lo = np.arange(1, len(x) + 1) / len(x), np.arange(len(x)) / len(x)
    cdf = 1 - (1 - x) ** 2
    assert max(np.abs(ecdf_hi - cdf).max(), np.abs(ecdf_lo - cdf).max()) < 1.63 / math.sqrt(len(x))
    # The raw uniform draws are kept (Optuna's params) and reproduce the weights.
    raw = [draws[0][space.raw_key("category_mix", n)] for n in ("landscape", "portrait", "text")]
    assert space.simplex_weights(raw) == pytest.approx(list(weights[0]))


def test_simplex_weights_edge_cases():
    assert space.simplex_weights([1.0, 1.0]) == [0.5, 0.5]  # all u = 1: the centre, not 0/0
    assert all(math.isfinite(w) for w in space.simplex_weights([0.0, 0.5]))


def test_recipe_params_drop_raw_draws():
    params = {"category_mix.raw.text": 0.3, "category_mix.text": 0.5, "steps": 3}
    assert space.recipe_params(params) == {"category_mix.text": 0.5, "steps": 3}


def test_ints_and_floats_respect_bounds_step_and_log():
    search = _search(
        steps={"int": [10, 50], "step": 10},
        nfe={"int": [1, 8], "log": True},
        t2i_edit_ratio={"float": [0.1, 0.9], "step": 0.1},
        guidance_scale={"float": [1.5, 6.0], "log": True},
    )
    draws = _draw(search, 400)
    assert {d["steps"] for d in draws} == {10, 20, 30, 40, 50}
    assert {d["nfe"] for d in draws} <= set(range(1, 9)) and all(isinstance(d["nfe"], int) for d in draws)
    ratios = {round(d["t2i_edit_ratio"], 9) for d in draws}
    assert ratios == {round(0.1 * k, 9) for k in range(1, 10)}
    scales = np.array([d["guidance_scale"] for d in draws])
    assert scales.min() >= 1.5 and scales.max() <= 6.0
    # log scale: the median sits near the geometric mean sqrt(1.5 * 6) = 3, not the midpoint 3.75
    assert abs(np.median(scales) - 3.0) < 0.3


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


def test_grid_sampler_enumerates_the_grid():
    search = _search(
        t2i_edit_ratio={"grid": [0.3, 0.5, 0.7]},
        teacher_switch_step={"int": [2, 4]},
        mixed_precision={"choice": ["no", "bf16"]},
    )
    draws = _draw(search, 18, sampler="grid")
    seen = {(d["t2i_edit_ratio"], d["teacher_switch_step"], d["mixed_precision"]) for d in draws}
    assert len(seen) == 18  # every point once, none repeated
    assert space.grid_space(search)["teacher_switch_step"] == [2, 3, 4]


def test_same_seed_same_draws_other_seed_other_draws():
    search = _search(t2i_edit_ratio={"float": [0.1, 0.9]}, category_mix={"simplex": ["a", "b"]})
    for sampler in space.SAMPLERS:
        if sampler == "grid":
            continue
        assert _draw(search, 5, sampler, seed=1) == _draw(search, 5, sampler, seed=1)
    assert _draw(search, 5, "tpe", seed=1) != _draw(search, 5, "tpe", seed=2)


@pytest.mark.parametrize("path", SEARCH_SPACES, ids=lambda p: p.name)
def test_shipped_search_space_validates_and_samples(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert path.read_text().startswith("# Question:")  # each says what it answers
    for params in sample_params(spec, 8):
        recipe = spec.recipe(params)
        assert recipe.steps <= 300  # small enough for the CPU sweep


def test_all_four_search_spaces_ship():
    assert {p.stem for p in SEARCH_SPACES} >= {"task_ratio", "data_mix", "teacher_switch", "joint"}
