"""orchestrator.effects: one effect table per registry axis, on hand-built trials tables.

    .venv/bin/python -m pytest tests/test_effects.py -q
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import polars as pl
import pytest
import yaml
from axis_frames import trials_varying_every_axis

from orchestrator import axes, effects
from orchestrator.axes import AXES, Axis, Buckets, Distinct, ScorePlot

STATS = ["score_mean", "score_std", "t2i_score_mean", "t2i_score_std", "edit_score_mean", "edit_score_std"]


@pytest.fixture()
def swept() -> pl.DataFrame:
    """Hand-made trials over all three axes (the last one stopped early: it must not count)."""
    return pl.DataFrame(
        {
            "trial_id": list("abcde"),
            "status": ["FINISHED"] * 4 + ["STOPPED"],
            "t2i_edit_ratio": [0.1, 0.12, 0.5, 1.0, 0.5],
            "teacher_switch_step": [0, 0, 2, 4, 2],
            "category_mix.landscape": [0.7, 0.1, 0.2, 0.3, 0.9],
            "category_mix.portrait": [0.2, 0.8, 0.2, 0.3, 0.05],
            "category_mix.text": [0.1, 0.1, 0.6, 0.4, 0.05],
            "t2i_score": [0.2, 0.4, 0.6, 0.9, 0.0],
            "edit_score": [0.8, 0.6, 0.5, 0.1, 0.0],
            "score": [0.5, 0.5, 0.55, 0.5, 0.0],
        }
    )


def test_ratio_table_buckets_finished_trials(swept):
    table = effects.effect(swept, AXES["t2i_edit_ratio"])
    assert table.columns == ["ratio_lo", "ratio_hi", "ratio", "n", *STATS]
    assert table["ratio"].to_list() == pytest.approx([0.1, 0.5, 0.975])  # 1.0 joins the last bucket
    assert table["n"].to_list() == [2, 1, 1]
    assert table["t2i_score_mean"].to_list() == pytest.approx([0.3, 0.6, 0.9])
    assert table["t2i_score_std"][0] == pytest.approx(math.sqrt(0.02))
    assert table["t2i_score_std"][1] is None  # one trial: no spread
    coarse = dataclasses.replace(AXES["t2i_edit_ratio"], groups=Buckets("ratio", (0.3,)))
    table = effects.effect(swept, coarse)
    assert table["n"].to_list() == [2, 2] and table["ratio_hi"].to_list() == [0.3, 1.0]


def test_category_table_groups_by_the_dominant_category(swept):
    table = effects.effect(swept, AXES["category_mix"])
    assert table.columns == ["dominant_category", "n", "mean_weight", *STATS]
    assert table["dominant_category"].to_list() == ["landscape", "portrait", "text"]
    assert table["n"].to_list() == [1, 1, 2]
    assert table["edit_score_mean"].to_list() == pytest.approx([0.8, 0.6, 0.3])
    assert table["mean_weight"].to_list() == pytest.approx([0.7, 0.8, 0.5])


def test_category_table_ignores_the_raw_simplex_draws(swept):
    raw = swept.with_columns(pl.lit(5.0).alias("category_mix.raw.text"))  # the largest value, but not a weight
    assert effects.effect(raw, AXES["category_mix"]).equals(effects.effect(swept, AXES["category_mix"]))


def test_switch_table_groups_by_step_as_integers(swept):
    table = effects.effect(swept, AXES["teacher_switch_step"])
    assert table.columns == ["teacher_switch_step", "n", *STATS]
    assert table["teacher_switch_step"].to_list() == [0, 2, 4]
    assert table["score_mean"].to_list() == pytest.approx([0.5, 0.55, 0.5])
    from_mlflow = swept.with_columns(pl.col("teacher_switch_step").cast(pl.Float64))  # MLflow params come back as floats
    assert effects.effect(from_mlflow, AXES["teacher_switch_step"]).equals(table)


def test_critic_updates_table_groups_by_the_ttur_ratio(swept):
    trials = swept.with_columns(pl.Series("critic_updates", [1, 5, 5, 8, 1]))  # the stopped trial's 1 does not count
    table = effects.effect(trials, AXES["critic_updates"])
    assert table.columns == ["critic_updates", "n", *STATS]
    assert table["critic_updates"].to_list() == [1, 5, 8] and table["n"].to_list() == [1, 2, 1]
    assert table["t2i_score_mean"].to_list() == pytest.approx([0.2, 0.5, 0.9])


def test_the_critic_updates_search_space_gives_a_row_per_ratio():
    spec = yaml.safe_load((Path(__file__).parents[1] / "search_spaces" / "critic_updates.yaml").read_text())
    grid = spec["search"]["critic_updates"]["grid"]
    trials = pl.DataFrame({"critic_updates": grid, "score": [0.5] * len(grid)})  # one trial per grid point
    assert effects.effect(trials, AXES["critic_updates"])["critic_updates"].to_list() == sorted(grid)
    assert list(effects.effects(trials)) == ["critic_updates"]


def test_tables_are_empty_when_the_axis_was_not_swept(swept):
    # MLflow frames carry the base value of every param: a constant column is not a swept axis
    constant = swept.with_columns(pl.lit(0.5).alias("t2i_edit_ratio"), pl.lit(4).alias("teacher_switch_step"))
    assert effects.effect(constant, AXES["t2i_edit_ratio"]).is_empty()
    assert effects.effect(constant, AXES["teacher_switch_step"]).is_empty()
    assert effects.effect(swept.select("trial_id", "status", "score"), AXES["category_mix"]).is_empty()
    # it varies only over a stopped trial: the finished ones decide
    stopped_only = swept.with_columns(pl.Series("t2i_edit_ratio", [0.5, 0.5, 0.5, 0.5, 0.9]))
    assert effects.effect(stopped_only, AXES["t2i_edit_ratio"]).is_empty()


def test_scores_missing_from_the_table_are_left_out(swept):
    table = effects.effect(swept.drop("t2i_score", "edit_score"), AXES["teacher_switch_step"])
    assert table.columns == ["teacher_switch_step", "n", "score_mean", "score_std"]


def test_effects_gives_the_swept_analysed_axes_in_registry_order(swept):
    tables = effects.effects(swept)
    assert list(tables) == ["t2i_edit_ratio", "category_mix", "teacher_switch_step"]
    assert tables["teacher_switch_step"].equals(effects.effect(swept, AXES["teacher_switch_step"]))
    assert list(effects.effects(swept.drop("t2i_edit_ratio", "teacher_switch_step"))) == ["category_mix"]
    every = trials_varying_every_axis()
    assert list(effects.effects(every)) == [a.field for a in axes.analysed()]


def test_an_axis_that_only_colours_the_front_has_no_table(swept):
    with pytest.raises(ValueError, match="guidance_scale has no effect table"):
        effects.effect(swept, AXES["guidance_scale"])


def test_a_new_registry_entry_gets_its_table(swept, monkeypatch):
    warmup = Axis("warmup_steps", "warmup steps", groups=Distinct(),
                  plot=ScorePlot("score_vs_warmup", "Scores vs warmup", "Warmup", "What warmup does."))
    monkeypatch.setitem(AXES, "warmup_steps", warmup)
    tables = effects.effects(swept.with_columns(pl.Series("warmup_steps", [0, 10, 10, 10, 0])))
    assert tables["warmup_steps"]["warmup_steps"].to_list() == [0, 10]
    assert tables["warmup_steps"]["n"].to_list() == [1, 3]


def test_finished_keeps_every_trial_without_a_status_column(swept):
    assert effects.finished(swept).height == 4
    assert effects.finished(swept.drop("status")).height == 5
