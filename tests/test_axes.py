"""orchestrator.axes: the registry of recipe axes, its columns, swept test and groupings, on hand-built frames.

    .venv/bin/python -m pytest tests/test_axes.py -q
"""

from __future__ import annotations

import typing
from pathlib import Path

import polars as pl
import pytest
import yaml

from orchestrator import axes
from orchestrator.axes import Axis, Buckets, Distinct, Dominant, ScorePlot
from trainers.recipe import Recipe

FIXED_FIGURES = {"front", "hypervolume", "learning_curves", "knee_samples"}  # orchestrator.plots.figures
SEARCH_SPACES = sorted((Path(__file__).parents[1] / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("axis", axes.AXES.values(), ids=lambda a: a.field)
def test_every_axis_is_a_recipe_field_under_its_own_name(axis):
    assert axes.AXES[axis.field] is axis
    annotation = Recipe.model_fields[axis.field].annotation
    assert axis.mix == (typing.get_origin(annotation) is dict)  # a mix is a name -> weight mapping
    assert axis.label


@pytest.mark.parametrize("path", SEARCH_SPACES, ids=lambda p: p.name)
def test_every_field_a_shipped_search_space_sweeps_is_in_the_registry(path):
    searched = {key.partition(".")[0] for key in yaml.safe_load(path.read_text())["search"]}  # category_mix.<name>
    assert searched <= set(axes.AXES), f"{path.name}: add {searched - set(axes.AXES)} to orchestrator/axes.py"


def test_analysed_axes_have_distinct_figures_and_notebook_words():
    names = [a.plot.name for a in axes.analysed()]
    assert len(set(names)) == len(names) and not FIXED_FIGURES & set(names)
    assert all(a.plot.title and a.plot.heading and a.plot.about for a in axes.analysed())
    assert [a.field for a in axes.analysed()][:3] == ["t2i_edit_ratio", "category_mix", "teacher_switch_step"]


def test_a_table_and_a_figure_go_together():
    with pytest.raises(AssertionError, match="go together"):
        Axis("steps", "steps", groups=Distinct())
    with pytest.raises(AssertionError, match="go together"):
        Axis("steps", "steps", plot=ScorePlot("score_vs_steps", "t", "h", "a"))


def test_columns_of_a_mix_exclude_the_raw_simplex_draws():
    trials = pl.DataFrame({"category_mix.text": [0.1], "category_mix.raw.text": [0.5], "category_mixer": [1.0],
                           "t2i_edit_ratio": [0.5]})
    assert axes.AXES["category_mix"].columns(trials) == ["category_mix.text"]
    assert axes.AXES["t2i_edit_ratio"].columns(trials) == ["t2i_edit_ratio"]
    assert axes.AXES["teacher_switch_step"].columns(trials) == []  # absent: not an error


def test_swept_needs_two_distinct_values_nulls_aside():
    ratio, mix = axes.AXES["t2i_edit_ratio"], axes.AXES["category_mix"]
    assert ratio.swept(pl.DataFrame({"t2i_edit_ratio": [0.3, 0.7]}))
    assert not ratio.swept(pl.DataFrame({"t2i_edit_ratio": [0.5, 0.5, None]}))  # a base value, as MLflow logs it
    assert not ratio.swept(pl.DataFrame({"score": [0.1, 0.2]}))
    # a mix is swept when any one weight varies; raw draws alone do not count
    assert mix.swept(pl.DataFrame({"category_mix.a": [1.0, 1.0], "category_mix.b": [0.0, 1.0]}))
    assert not mix.swept(pl.DataFrame({"category_mix.a": [1.0, 1.0], "category_mix.raw.a": [0.1, 0.9]}))


def test_buckets_assign_each_value_to_the_bucket_between_its_edges():
    frame = pl.DataFrame({"x": [0.0, 0.049, 0.05, 0.5, 0.949, 0.95, 1.0]})
    out = Buckets("r", axes.RATIO_BUCKETS).assign(frame, ["x"])
    assert out["r_lo"].to_list() == [0.0, 0.0, 0.05, 0.45, 0.85, 0.95, 0.95]  # an edge opens its bucket
    assert out["r_hi"].to_list() == [0.05, 0.05, 0.15, 0.55, 0.95, 1.0, 1.0]
    assert out["r"].to_list() == pytest.approx([0.025, 0.025, 0.1, 0.5, 0.9, 0.975, 0.975])
    assert Buckets("r", (0.3,)).keys(["x"]) == ("r_lo", "r_hi", "r")


def test_ratio_buckets_are_centred_on_the_paper_ratios():
    assert axes.RATIO_BUCKETS == (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)
    ticks, labels = axes.ratio_ticks(pl.DataFrame(), "ratio")
    assert ticks == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert labels == ["0.1\n1:9", "0.3\n3:7", "0.5\n5:5", "0.7\n7:3", "0.9\n9:1"]


def test_distinct_keys_by_the_field_as_integers():
    frame = Distinct().assign(pl.DataFrame({"k": [2.0, 0.0, 2.0]}), ["k"])  # as MLflow gives params back
    assert frame["k"].dtype == pl.Int64 and frame["k"].to_list() == [2, 0, 2]
    assert Distinct().keys(["k"]) == ("k",)
    assert axes.value_ticks(pl.DataFrame({"k": [0, 2]}), "k") == ([0, 2], None)


def test_dominant_takes_the_largest_weight_and_the_first_on_ties():
    frame = pl.DataFrame({"m.a": [0.4, 0.1, 2.0], "m.b": [0.4, 0.6, 1.0], "m.c": [0.2, 0.3, 1.0]})
    out = Dominant("dominant_thing").assign(frame, ["m.a", "m.b", "m.c"])
    assert out["dominant_thing"].to_list() == ["a", "b", "a"]
    assert out["dominant_weight"].to_list() == pytest.approx([0.4, 0.6, 0.5])  # share of the sum: weights need not sum to 1
    assert Dominant("dominant_thing").keys(["m.a"]) == ("dominant_thing",)
