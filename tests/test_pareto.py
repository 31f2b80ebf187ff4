"""Pareto front, knee and hypervolume (the sweep's tables: tests/test_results.py).

    .venv/bin/python -m pytest tests/test_pareto.py -q

The front and the hypervolume are checked against Optuna's own implementations on random point
sets (hypothesis): `study.best_trials` of a real multi-objective study, and
`optuna._hypervolume.compute_hypervolume` (which minimises, so maximised axes are negated). The
noise-aware front is checked against its rule by hand (SE 0: the rows not strictly dominated on every
axis) and on hand-computed z = 2 cases.
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


# -- the noise-aware front -----------------------------------------------------------------------


def not_strictly_dominated(points: np.ndarray, modes: list[str]) -> np.ndarray:
    """By hand: rows that no row beats strictly on every axis (NaN rows: never kept, beat nothing)."""
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    loss = points * signs
    finite = ~np.isnan(loss).any(axis=1)
    return np.array([finite[i] and not any(finite[j] and (loss[j] < loss[i]).all() for j in range(len(loss)))
                     for i in range(len(loss))])


@st.composite
def noisy_point_sets(draw, max_rows: int = 20):
    """(points, errors, modes): as point_sets, with a standard error per value in [0, 2]."""
    points, modes = draw(point_sets(max_rows))
    errors = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), min_size=points.size, max_size=points.size))
    return points, np.array(errors).reshape(points.shape), modes


@settings(max_examples=60, deadline=None)
@given(point_sets())
def test_with_no_noise_the_noise_aware_set_is_the_rows_not_strictly_dominated_on_every_axis(case):
    points, modes = case
    mask = pareto.noise_aware_mask(points, np.zeros_like(points), modes)
    assert mask.tolist() == not_strictly_dominated(points, modes).tolist()


@settings(max_examples=60, deadline=None)
@given(noisy_point_sets(), st.floats(0.0, 3.0))
def test_the_noise_aware_set_holds_the_front_and_grows_with_z(case, z):
    points, errors, modes = case
    mask = pareto.noise_aware_mask(points, errors, modes, z)
    assert (mask >= pareto.pareto_mask(points, modes)).all()  # the plain front is always in it
    assert (pareto.noise_aware_mask(points, errors, modes, z + 1.0) >= mask).all()  # calling less, keeping more


def test_huge_standard_errors_keep_every_row():
    points = np.array([[0.9, 0.9], [0.1, 0.1], [0.5, 0.2], [0.0, 0.0]])
    assert pareto.noise_aware_mask(points, np.full_like(points, 10.0), ["max", "max"]).all()
    assert pareto.pareto_mask(points, ["max", "max"]).tolist() == [True, False, False, False]


def test_clear_dominance_by_hand_with_z_2():
    # B = (0.60, 0.60) vs A = (0.50, 0.55), SE 0.02 each: SE_diff = 0.0283, 2 SE = 0.0566.
    # x: 0.10 > 0.0566 (clear); y: 0.05 < 0.0566 (not clear) -> A is not clearly dominated
    points = np.array([[0.60, 0.60], [0.50, 0.55]])
    se = np.full_like(points, 0.02)
    assert pareto.noise_aware_mask(points, se, ["max", "max"]).tolist() == [True, True]
    # y gap 0.07 > 0.0566 on both axes now: A is clearly dominated
    points[1, 1] = 0.53
    assert pareto.noise_aware_mask(points, se, ["max", "max"]).tolist() == [True, False]
    # at z = 1 the first case is called too (0.05 > 0.0283); B, beaten by nobody, stays
    points[1, 1] = 0.55
    assert pareto.noise_aware_mask(points, se, ["max", "max"], z=1.0).tolist() == [True, False]
    # a larger SE on A alone widens the difference's SE: sqrt(0.05² + 0.02²) = 0.0539, 2 SE = 0.108 > 0.10
    se[1] = 0.05
    assert pareto.noise_aware_mask(points, se, ["max", "max"], z=2.0).tolist() == [True, True]


def test_min_mode_axes_count_lower_as_better():
    # score maximised, fd minimised: B (0.8, 10) beats A (0.6, 20) by 0.2 and 10, far beyond 2 SE
    points = np.array([[0.8, 10.0], [0.6, 20.0], [0.6, 10.5]])
    se = np.array([[0.01, 1.0], [0.01, 1.0], [0.01, 1.0]])
    assert pareto.noise_aware_mask(points, se, ["max", "min"]).tolist() == [True, False, True]  # fd gap 0.5 < 2.83
    # read the other way round (fd maximised), A's high fd is no longer worse: nobody beats it on fd
    assert pareto.noise_aware_mask(points, se, ["max", "max"]).tolist() == [True, True, True]
    # and with score minimised too, A (lowest score, highest fd) beats B clearly on both
    assert pareto.noise_aware_mask(points, se, ["min", "max"]).tolist() == [False, True, True]


def test_nan_points_are_dropped_and_nan_errors_count_as_zero():
    points = np.array([[1.0, 1.0], [np.nan, 2.0], [0.5, 0.5]])
    errors = np.array([[np.nan, np.nan], [0.0, 0.0], [np.nan, 0.0]])
    assert pareto.noise_aware_mask(points, errors, ["max", "max"]).tolist() == [True, False, False]


def test_noise_aware_mask_rejects_bad_errors_and_z():
    points = np.array([[1.0, 1.0]])
    with pytest.raises(ValueError, match="shape"):
        pareto.noise_aware_mask(points, np.zeros((1, 3)), ["max", "max"])
    with pytest.raises(ValueError, match=">= 0"):
        pareto.noise_aware_mask(points, np.array([[-0.1, 0.0]]), ["max", "max"])
    with pytest.raises(ValueError, match="expected z >= 0"):
        pareto.noise_aware_mask(points, np.zeros_like(points), ["max", "max"], z=-1.0)


def test_se_column_names_follow_the_evaluation():
    assert pareto.se_column("t2i_score") == "t2i_score_se"
    assert pareto.se_column("t2i_score/text") == "t2i_score_se/text"


def test_noise_aware_front_reads_the_se_columns_missing_or_null_meaning_zero():
    df = pl.DataFrame({
        "id": ["best", "near", "far", "untested", "none"],
        "t2i_score": [0.60, 0.55, 0.30, 0.50, None],
        "t2i_score_se": [0.02, 0.02, 0.02, None, 0.02],
        "edit_score": [0.60, 0.58, 0.30, 0.50, 0.9],
    })  # no edit_score_se column: edit differences are read as exact
    objectives = {"t2i_score": "max", "edit_score": "max"}
    # near: t2i gap 0.05 < 2·0.028, kept; far: beaten by 0.30 and 0.30; untested (SE null = 0): t2i gap 0.10 >
    # 2·0.02, edit gap 0.10 > 0 -> dropped; none: no t2i_score, on no front
    assert pareto.noise_aware_front(df, objectives)["id"].to_list() == ["best", "near"]
    assert pareto.pareto_front(df, objectives)["id"].to_list() == ["best"]
    plain = pareto.noise_aware_front(df.drop("t2i_score_se"), objectives)  # no SEs at all: the strict rule
    assert plain["id"].to_list() == ["best"]
    grouped = df.rename({"t2i_score": "t2i_score/text", "t2i_score_se": "t2i_score_se/text"})
    assert pareto.noise_aware_front(grouped, {"t2i_score/text": "max", "edit_score": "max"})["id"].to_list() == [
        "best", "near"]


def test_with_fronts_flags_every_row_in_order():
    df = pl.DataFrame({"id": list("abcd"), "x": [1.0, 0.95, 0.2, None], "y": [1.0, 0.95, 0.2, 2.0],
                       "x_se": [0.05, 0.05, 0.05, 0.05], "y_se": [0.05, 0.05, 0.05, 0.05]})
    flagged = pareto.with_fronts(df, {"x": "max", "y": "max"})
    assert flagged.columns == [*df.columns, "on_front", "not_clearly_dominated"]
    assert flagged["on_front"].to_list() == [True, False, False, False]
    assert flagged["not_clearly_dominated"].to_list() == [True, True, False, False]
