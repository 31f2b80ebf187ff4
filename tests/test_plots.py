"""orchestrator.plots: every figure from the axis registry, on hand-built trials tables and run dirs.

    .venv/bin/python -m pytest tests/test_plots.py -q
"""

from __future__ import annotations

import polars as pl
import pytest
from axis_frames import assert_images, run_dir_varying_every_axis, trials_varying_every_axis

from orchestrator import axes, plots
from orchestrator.axes import AXES, Axis, Distinct, ScorePlot

FIXED = ["front", "hypervolume", "learning_curves", "knee_samples"]


@pytest.fixture()
def every() -> pl.DataFrame:
    return trials_varying_every_axis()


@pytest.fixture()
def warmup(monkeypatch) -> Axis:
    """A fourth analysed axis, added to the registry for one test."""
    axis = Axis("warmup_steps", "warmup steps", groups=Distinct(), plot=ScorePlot(
        "score_vs_warmup", "Scores vs warmup steps", "Warmup", "What warmup does.", xlabel="warmup_steps"))
    monkeypatch.setitem(AXES, "warmup_steps", axis)
    return axis


def figure_names() -> list[str]:
    return [*FIXED[:2], *(a.plot.name for a in axes.analysed()), *FIXED[2:]]


def test_save_all_draws_every_figure_when_every_axis_was_swept(tmp_path):
    run_dir = run_dir_varying_every_axis(tmp_path)
    paths = plots.save_all(run_dir, tmp_path / "figures")
    assert [p.stem for p in paths] == figure_names()
    assert_images(paths)


def test_the_front_has_a_panel_per_swept_axis_in_registry_order(every):
    fig = plots.front_by_axis(every)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [f"coloured by {f}" for f in AXES]
    assert [a.field for a in plots.swept_axes(every)] == list(AXES)
    only_ratio = every.select("trial_id", "status", "t2i_edit_ratio", "t2i_score", "edit_score")
    assert [ax.get_title() for ax in plots.front_by_axis(only_ratio).axes if ax.get_title()] == [
        "coloured by t2i_edit_ratio"]


def test_a_mix_colours_the_front_by_its_dominant_category_and_a_scalar_by_a_scale(every):
    fig = plots.front_by_axis(every.select("trial_id", "status", "t2i_score", "edit_score", "teacher_switch_step",
                                           *AXES["category_mix"].columns(every)))
    mix_panel, switch_panel, colour_bar = fig.axes
    assert mix_panel.get_legend().get_title().get_text() == AXES["category_mix"].label
    assert colour_bar.get_ylabel() == AXES["teacher_switch_step"].label
    assert colour_bar.get_yticks().tolist() == sorted(set(every["teacher_switch_step"].to_list()))  # integer ticks


def test_overview_lists_the_swept_axes_columns(every):
    table = plots.overview(every.with_columns(pl.lit(0.5).alias("category_mix.raw.text")))
    mix = AXES["category_mix"].columns(every)
    assert table.columns[:2] == ["trial_id", "status"] and set(mix) <= set(table.columns)
    assert "category_mix.raw.text" not in table.columns


@pytest.mark.parametrize("axis", axes.analysed(), ids=lambda a: a.field)
def test_each_analysed_axis_has_its_score_figure(every, axis):
    fig = plots.score_plot(every, axis)
    assert fig.get_suptitle() == axis.plot.title
    panels = [ax for ax in fig.axes if ax.get_xlabel()]
    if axis.mix:  # a panel per weight, each named by its column
        assert [ax.get_xlabel() for ax in panels] == [f"{c} (weight)" for c in axis.columns(every)]
    else:
        assert [ax.get_xlabel() for ax in panels] == [axis.plot.xlabel]
    assert plots.axis_figure(every, axis)[0] is not None


def test_the_score_figure_marks_each_group_at_its_position(every):
    axis = AXES["teacher_switch_step"]
    (ax,) = plots.score_plot(every, axis).axes
    assert ax.get_xticks().tolist() == sorted(set(every.filter(pl.col("status") == "FINISHED")[axis.field]))
    (ratio_ax,) = plots.score_plot(every, AXES["t2i_edit_ratio"]).axes
    assert [t.get_text() for t in ratio_ax.get_xticklabels()][0] == "0.1\n1:9"
    assert ratio_ax.get_xlim() == (0.0, 1.0)


def test_figures_skip_what_a_sweep_did_not_vary(tmp_path, capsys):
    trials = pl.DataFrame({"trial_id": ["a", "b"], "status": ["FINISHED"] * 2, "t2i_edit_ratio": [0.5, 0.5],
                           "t2i_score": [0.1, 0.2], "edit_score": [0.2, 0.1], "score": [0.15, 0.15]})
    assert plots.front_by_axis(trials) is None  # nothing varied: nothing to colour by
    for axis in axes.analysed():
        fig, why = plots.axis_figure(trials, axis)
        assert fig is None and why == f"{axis.field} was not swept"
        assert plots.show(fig, tmp_path, axis.plot.name, why) is None
        assert f"{axis.plot.name}: skipped, {axis.field} was not swept" in capsys.readouterr().out
    assert plots.knee_samples(tmp_path, trials) is None  # no trial folder, no sample grid
    assert plots.hypervolume_curve(trials) is not None
    assert not list(tmp_path.iterdir())  # nothing saved for a skipped figure


def test_a_new_registry_entry_gets_its_figure_and_a_front_panel(tmp_path, warmup):
    run_dir = run_dir_varying_every_axis(tmp_path)
    trials = pl.read_parquet(run_dir / "trials.parquet")
    trials.with_columns(pl.Series("warmup_steps", [0, 5, 10] * 4)).write_parquet(run_dir / "trials.parquet")
    paths = plots.save_all(run_dir, tmp_path / "figures")
    assert "score_vs_warmup" in [p.stem for p in paths] and [p.stem for p in paths] == figure_names()
    fig = plots.front_by_axis(pl.read_parquet(run_dir / "trials.parquet"))
    assert "coloured by warmup_steps" in [ax.get_title() for ax in fig.axes]


def test_knee_samples_shows_the_knee_trials_last_grid(tmp_path, every):
    run_dir = run_dir_varying_every_axis(tmp_path)
    front = plots.pareto.pareto_front(plots.effects.finished(every), plots.DEFAULT_OBJECTIVES)
    knee = plots.pareto.knee(front, plots.DEFAULT_OBJECTIVES)["trial_id"]
    fig = plots.knee_samples(run_dir, front)
    assert fig.get_suptitle() == f"Knee trial {knee}: final samples"
    assert fig.axes[0].get_images()[0].get_array().shape[:2] == (128, 256)  # the grid itself, pixel for pixel
    assert plots.knee_samples(tmp_path / "elsewhere", front) is None
