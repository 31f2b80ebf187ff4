"""Pareto front, knee and hypervolume (the sweep's tables: tests/test_results.py).

    .venv/bin/python -m pytest tests/test_pareto.py -q

The front and the hypervolume are checked against Optuna's own implementations on random point
sets (hypothesis): `study.best_trials` of a real multi-objective study, and
`optuna._hypervolume.compute_hypervolume` (which minimises, so maximised axes are negated).
"""

from __future__ import annotations

import numpy as np
import optuna
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna._hypervolume import compute_hypervolume

from orchestrator import pareto

optuna.logging.set_verbosity(optuna.logging.WARNING)


@st.composite
def point_sets(draw, max_rows: int = 25):
    """(points, modes): 2 or 3 objectives with mixed modes; small integer values so ties and duplicates are common."""
    dims = draw(st.integers(2, 3))
    modes = draw(st.lists(st.sampled_from(["max", "min"]), min_size=dims, max_size=dims))
    rows = draw(st.lists(st.lists(st.integers(-3, 3), min_size=dims, max_size=dims), min_size=1, max_size=max_rows))
    return np.array(rows, dtype=float), modes


def optuna_front(points: np.ndarray, modes: list[str]) -> np.ndarray:
    """Optuna's Pareto set of the points, as a mask, from a real study's best_trials."""
    study = optuna.create_study(directions=["maximize" if m == "max" else "minimize" for m in modes])
    for row in points:
        study.add_trial(optuna.trial.create_trial(values=list(row)))
    mask = np.zeros(len(points), dtype=bool)
    mask[[t.number for t in study.best_trials]] = True
    return mask


def frame(points: np.ndarray) -> tuple[pl.DataFrame, list[str]]:
    names = [f"m{i}" for i in range(points.shape[1])]
    return pl.DataFrame({"row": range(len(points)), **{n: points[:, i] for i, n in enumerate(names)}}), names


@settings(max_examples=60, deadline=None)
@given(point_sets())
def test_pareto_mask_matches_optuna_best_trials(case):
    points, modes = case
    assert pareto.pareto_mask(points, modes).tolist() == optuna_front(points, modes).tolist()


@settings(max_examples=60, deadline=None)
@given(point_sets())
def test_pareto_front_keeps_the_non_dominated_rows_in_order(case):
    points, modes = case
    df, names = frame(points)
    front = pareto.pareto_front(df, dict(zip(names, modes, strict=True)))
    assert front["row"].to_list() == np.flatnonzero(optuna_front(points, modes)).tolist()


@settings(max_examples=80, deadline=None)
@given(point_sets(max_rows=15), st.floats(0.5, 3.0))
def test_hypervolume_matches_optuna(case, margin):
    points, modes = case
    df, names = frame(points)
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])  # Optuna minimises
    loss, reference = points * signs, np.full(len(modes), 2.0)  # a reference that cuts some points off
    inside = (loss < reference).all(axis=1)
    expected = compute_hypervolume(loss[inside], reference) if inside.any() else 0.0
    ours = pareto.hypervolume(df, dict(zip(names, modes, strict=True)), list(reference * signs))
    assert ours == pytest.approx(expected, abs=1e-9)
    # pushing the reference out never loses volume
    wider = pareto.hypervolume(df, dict(zip(names, modes, strict=True)), list((reference + margin) * signs))
    assert wider >= ours


def test_pareto_front_drops_null_and_nan_rows_and_keeps_identical_points():
    df = pl.DataFrame(
        {"id": list("abcdef"), "x": [1.0, 1.0, None, float("nan"), 0.5, 9.0], "y": [2.0, 2.0, 9.0, 9.0, 1.0, None]}
    )
    front = pareto.pareto_front(df, {"x": "max", "y": "max"})
    assert front["id"].to_list() == ["a", "b"]  # identical: neither dominates; e is dominated


def test_pareto_front_names_a_missing_objective():
    with pytest.raises(ValueError, match="no column 'fd'"):
        pareto.pareto_front(pl.DataFrame({"score": [1.0]}), {"score": "max", "fd": "min"})


def test_pareto_front_of_nothing_is_empty():
    assert pareto.pareto_front(pl.DataFrame({"x": [None, None]}, schema={"x": pl.Float64}), {"x": "max"}).is_empty()


def test_hypervolume_by_hand():
    # maximise both from (0, 0): the union of [0,3]x[0,1], [0,2]x[0,2], [0,1]x[0,3] is 3 + 1 + 1 + 1 = 6
    df = pl.DataFrame({"a": [3.0, 2.0, 1.0, 0.5], "b": [1.0, 2.0, 3.0, 0.5]})
    assert pareto.hypervolume(df, {"a": "max", "b": "max"}, [0, 0]) == pytest.approx(6.0)
    # fd minimised with reference 10: the point with fd 12 is worse than the reference and adds nothing
    df = pl.DataFrame({"score": [0.5, 0.9], "fd": [4.0, 12.0]})
    assert pareto.hypervolume(df, {"score": "max", "fd": "min"}, [0.0, 10.0]) == pytest.approx(0.5 * 6.0)
    # a unit cube corner in 3-D
    cube = pl.DataFrame({"a": [1.0], "b": [1.0], "c": [1.0]})
    assert pareto.hypervolume(cube, {"a": "max", "b": "max", "c": "max"}, [0, 0, 0]) == pytest.approx(1.0)


def test_hypervolume_rejects_bad_arguments():
    df = pl.DataFrame({"a": [1.0], "b": [1.0]})
    with pytest.raises(ValueError, match="2 reference values"):
        pareto.hypervolume(df, {"a": "max", "b": "max"}, [0.0])
    four = {k: "max" for k in "abcd"}
    with pytest.raises(ValueError, match="1 to 3 objectives"):
        pareto.hypervolume(pl.DataFrame({k: [1.0] for k in "abcd"}), four, [0.0] * 4)


def test_hypervolume_history_grows_to_the_hypervolume_of_all_rows():
    rng = np.random.default_rng(0)
    df = pl.DataFrame({"a": rng.uniform(size=12), "b": rng.uniform(size=12)})
    df = df.with_columns(pl.when(pl.int_range(12) == 3).then(None).otherwise(pl.col("a")).alias("a"))
    objectives = {"a": "max", "b": "max"}
    history = pareto.hypervolume_history(df, objectives, [0, 0])
    assert len(history) == 12 and all(b >= a for a, b in zip(history, history[1:], strict=False))
    assert history[3] == history[2]  # the row with a null adds nothing
    assert history[-1] == pytest.approx(pareto.hypervolume(df, objectives, [0, 0]))


def test_reference_point_is_worse_than_every_row():
    df = pl.DataFrame({"score": [0.2, 0.6], "fd": [3.0, 5.0], "flat": [1.0, 1.0]})
    ref = pareto.reference_point(df, {"score": "max", "fd": "min", "flat": "max"}, margin=0.1)
    assert ref == pytest.approx([0.2 - 0.04, 5.0 + 0.2, 1.0 - 0.1])


# -- knee ----------------------------------------------------------------------------------------


def test_knee_picks_the_point_closest_to_utopia():
    front = pl.DataFrame({"id": ["a", "b", "c"], "x": [0.0, 0.6, 1.0], "y": [1.0, 0.6, 0.0]})
    # normalised points equal the raw ones; distances to (1, 1): 1, 0.566, 1
    assert pareto.knee(front, {"x": "max", "y": "max"})["id"] == "b"


def test_knee_normalises_each_objective_and_flips_minimised_ones():
    # fd in [10, 30] minimised: a -> (0, 1), b -> (0.75, 0.5), c -> (1, 0)
    front = pl.DataFrame({"id": ["a", "b", "c"], "score": [0.2, 0.35, 0.4], "fd": [10.0, 20.0, 30.0]})
    # distances: 1.0, hypot(0.25, 0.5) = 0.559, 1.0
    assert pareto.knee(front, {"score": "max", "fd": "min"})["id"] == "b"


def test_knee_ties_go_to_the_first_row():
    front = pl.DataFrame({"id": ["a", "b"], "x": [0.0, 1.0], "y": [1.0, 0.0]})
    assert pareto.knee(front, {"x": "max", "y": "max"})["id"] == "a"
    assert pareto.knee(front.reverse(), {"x": "max", "y": "max"})["id"] == "b"


def test_knee_counts_a_constant_objective_as_best():
    front = pl.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 3.0, 2.0], "y": [5.0, 5.0, 5.0]})
    assert pareto.knee(front, {"x": "max", "y": "max"})["id"] == "b"
    assert pareto.knee(front, {"x": "min", "y": "max"})["id"] == "a"


def test_knee_of_one_point_is_that_point_and_of_none_an_error():
    front = pl.DataFrame({"id": ["a"], "x": [0.3], "y": [0.1]})
    assert pareto.knee(front, {"x": "max", "y": "min"}) == {"id": "a", "x": 0.3, "y": 0.1}
    with pytest.raises(ValueError, match="front is empty"):
        pareto.knee(front.clear(), {"x": "max", "y": "min"})
