"""The search-efficiency benchmark's sampler loop, curves and summary, over a synthetic truth table.

    .venv/bin/python -m pytest tests/test_search_efficiency.py -q

Real Optuna, the shipped space (benchmarks/search_efficiency.yaml), no training: the truth table is
a formula with a known front (the teacher_switch_step = 4 row), so the grid's hypervolume is known.
The slow test runs the whole benchmark on micro teachers.
"""

import json
import math

import numpy as np
import pytest

from benchmarks import search_efficiency as se
from orchestrator import pareto
from orchestrator.spec import load_spec

SPEC = "benchmarks/search_efficiency.yaml"
OBJECTIVES = {"t2i_score": "max", "edit_score": "max"}


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC)


def synthetic(config):
    """T2I rises with the ratio, edit falls with it; both grow with the switch step (k = 4 dominates)."""
    r, k = config["t2i_edit_ratio"], config["teacher_switch_step"]
    return [r * (0.6 + 0.1 * k), (1 - r) * (0.6 + 0.1 * k)]


@pytest.fixture(scope="module")
def truth(spec):
    return {se.config_key(c): synthetic(c) for c in se.grid_configs(spec)}


def frame_of(truth):
    import polars as pl

    return pl.DataFrame([v for v in truth.values()], schema=list(OBJECTIVES), orient="row")


def curve(spec, truth, name, seed):
    run = se.run_sampler(spec, name, seed, truth, len(truth), se.SAMPLER_OPTIONS.get(name))
    reference = pareto.reference_point(frame_of(truth), OBJECTIVES, margin=se.REFERENCE_MARGIN)
    full = pareto.hypervolume(frame_of(truth), OBJECTIVES, reference)
    return run, se.anytime_fraction(run.order, truth, OBJECTIVES, reference, full, len(truth))


def test_the_shipped_space_is_a_25_point_grid(spec, truth):
    assert len(truth) == 25
    assert se.grid_space(spec.search) == {"t2i_edit_ratio": [0.1, 0.3, 0.5, 0.7, 0.9],
                                          "teacher_switch_step": [0, 1, 2, 3, 4]}


def test_the_grid_visits_every_point_once_and_ends_at_exactly_one(spec, truth):
    run, fraction = curve(spec, truth, "grid", 0)
    assert sorted(run.order) == sorted(truth) and run.proposals == 25
    assert fraction[-1] == 1.0
    assert fraction[0] < 1.0  # one point is not the front


def test_grid_order_is_optunas_shuffle_by_seed(spec, truth):
    orders = [se.run_sampler(spec, "grid", seed, truth, 25).order for seed in (0, 1)]
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])


@pytest.mark.parametrize("name", se.SAMPLER_NAMES)
def test_curves_are_non_decreasing_fractions_of_the_grid(spec, truth, name):
    run, fraction = curve(spec, truth, name, 1)
    assert len(fraction) == 25
    assert np.all(np.diff(fraction) >= 0)
    assert np.all((fraction >= 0) & (fraction <= 1 + 1e-12))
    if len(run.order) == 25:  # the whole grid trained: its front is the grid's
        assert fraction[-1] == pytest.approx(1.0)


def test_repeats_cost_no_compute_and_are_answered_from_their_twin(spec, truth):
    run, _ = curve(spec, truth, "random", 0)
    repeats = [t for t in run.study.trials if "duplicate_of" in t.user_attrs]
    assert run.proposals > len(run.order)  # random repeats itself on 25 points
    assert len(run.order) == len(set(run.order))  # compute counts distinct trials only
    assert len(repeats) == run.proposals - len(run.order)
    by_number = {t.number: t for t in run.study.trials}
    for trial in repeats:  # told its twin's values, as DedupOptunaSearch does
        assert trial.values == by_number[trial.user_attrs["duplicate_of"]].values


def test_every_sampler_proposes_only_grid_points(spec, truth):
    for name in se.SAMPLER_NAMES:
        run = se.run_sampler(spec, name, 2, truth, 25, se.SAMPLER_OPTIONS.get(name))
        assert set(run.order) <= set(truth)


def test_a_spent_space_ends_the_run_instead_of_rerunning_points(spec, truth):
    run = se.run_sampler(spec, "grid", 0, truth, 30)  # a budget beyond the grid
    assert run.exhausted and len(run.order) == 25
    assert run.proposals == 25 + se.MAX_RETRIES + 1


def test_a_proposal_off_the_grid_is_an_error(spec, truth):
    partial = dict(list(truth.items())[:3])
    with pytest.raises(KeyError, match="not a grid point"):
        se.run_sampler(spec, "random", 0, partial, 3)


def test_compute_fractions_read_the_curve():
    line = np.array([0.2, 0.5, 0.9, 0.96, 1.0] + [1.0] * 5)
    assert se.at_compute(line, 0.4) == 0.96  # 4 of 10 trials
    assert se.at_compute(line, 0.01) == 0.2  # at least one trial
    assert se.compute_to_reach(line, 0.95) == 0.4
    assert se.compute_to_reach(line * 0.9, 0.95) is None


def test_summary_fields_and_goal():
    n = 25
    fast = [np.minimum(1.0, np.arange(1, n + 1) / 8) for _ in range(3)]  # 1.0 from 8 trials on
    slow = [np.arange(1, n + 1) / n for _ in range(3)]
    out = se.summarise({"grid": slow, "tpe": fast})
    assert set(out) == {"samplers", "goal"}
    tpe = out["samplers"]["tpe"]
    assert list(tpe["hv_fraction_at"]) == ["10%", "20%", "30%", "40%", "60%", "100%"]
    assert tpe["hv_fraction_at"]["40%"] == {"mean": 1.0, "std": 0.0}
    assert tpe["compute_to_95"] == {"mean": 0.32, "per_seed": [0.32] * 3}
    assert out["samplers"]["grid"]["compute_to_95"]["mean"] == 0.96
    assert out["goal"]["best_sampler"] == "tpe" and out["goal"]["met"] is True
    assert out["goal"]["hv_fraction_at_40%"] == 1.0
    json.dumps(out)  # plain JSON


def test_a_seed_that_never_reaches_95_makes_the_mean_null():
    n = 10
    curves = {"random": [np.ones(n), np.full(n, 0.5)]}
    reach = se.summarise(curves)["samplers"]["random"]["compute_to_95"]
    assert reach == {"mean": None, "per_seed": [0.1, None]}


def test_the_truth_table_is_cached_by_recipe(spec, tmp_path):
    calls = []

    def train(recipe):  # stands in for distill: a formula of the recipe, so no training here
        calls.append(recipe)
        ratio = recipe.t2i_edit_ratio
        return {"t2i_score": ratio, "edit_score": 1 - ratio, "score": 0.5}, 1.0

    cache = tmp_path / "cache.parquet"
    first = se.truth_table(spec, dict(spec.base), train, cache, "tiny")
    assert len(calls) == 25 and not first["cached"].any()
    again = se.truth_table(spec, dict(spec.base), train, cache, "tiny")
    assert len(calls) == 25 and again["cached"].all()
    assert again.drop("cached").equals(first.drop("cached"))
    se.truth_table(spec, dict(spec.base) | {"steps": 9}, train, cache, "tiny")  # another recipe: retrained
    assert len(calls) == 50
    se.truth_table(spec, dict(spec.base), train, cache, "micro")  # another world: retrained
    assert len(calls) == 75


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "fig" / "se.png"
    se.plot({"grid": [np.linspace(0.1, 1, 5)] * 2}, path, "test")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_sampler_option_flags_override_the_defaults():
    opts = se.sampler_options(["nsga2.population_size=8", "tpe.multivariate=true"])
    assert opts["nsga2"] == {"population_size": 8}
    assert opts["tpe"] == {**se.SAMPLER_OPTIONS["tpe"], "multivariate": True}
    with pytest.raises(SystemExit):
        se.sampler_options(["gpx.a=1"])


@pytest.mark.slow
def test_benchmark_end_to_end_on_micro_teachers(tmp_path, capsys):
    spec = tmp_path / "small.yaml"
    text = open(SPEC).read()
    text = text.replace("{float: [0.1, 0.9], step: 0.2}", "{float: [0.2, 0.8], step: 0.6}")
    text = text.replace("{int: [0, 4]}", "{int: [2, 4], step: 2}").replace("trials: 25", "trials: 4")
    spec.write_text(text)
    plot_path = tmp_path / "se.png"
    argv = ["--micro", "--spec", str(spec), "--cache", str(tmp_path / "c.parquet"), "--plot", str(plot_path),
            "--set", "steps=2", "--set", "report_every=2",
            "--set", "eval_items=16", "--set", "eval_items_quick=16",
            "--sampler-seeds", "3"]
    se.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["grid_points"] == 4 and out["truth_table"]["trained_now"] == 4
    assert set(out["samplers"]) == set(se.SAMPLER_NAMES)
    assert out["samplers"]["grid"]["hv_fraction_at"]["100%"]["mean"] == 1.0
    assert not math.isnan(out["grid_hv"]) and isinstance(out["goal"]["met"], bool)
    assert plot_path.read_bytes()[:4] == b"\x89PNG"
    se.main(argv)  # again: everything from the cache
    assert json.loads(capsys.readouterr().out)["truth_table"]["cached"] == 4


def test_landscape_sets_the_grid_spread_beside_the_evaluation_se():
    import polars as pl

    table = pl.DataFrame({"t2i_score": [0.4, 0.6], "t2i_score_se": [0.05, 0.03], "edit_score": [0.5, 0.5]})
    out = se.landscape(table, OBJECTIVES)
    assert out["t2i_score"] == {"spread_std": round(math.sqrt(0.02), 4), "eval_se_mean": 0.04}
    assert out["edit_score"] == {"spread_std": 0.0, "eval_se_mean": None}  # no SE reported: none shown
