"""orchestrator.plots: every figure from the axis registry, on hand-built trials tables and run dirs.

    .venv/bin/python -m pytest tests/test_plots.py -q
"""

from __future__ import annotations

import polars as pl
import pytest
from axis_frames import assert_images, run_dir_varying_every_axis, trials_varying_every_axis
from matplotlib.collections import PathCollection

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


# -- noise: error bars, rings on the noise-aware set, the hypervolume's reference -------------------


def with_errors(trials: pl.DataFrame, se: float = 0.03) -> pl.DataFrame:
    """The trials with an SE beside each plotted objective (null for the first trial's edit score)."""
    return trials.with_columns(pl.lit(se).alias("t2i_score_se"),
                               pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.lit(se)).alias("edit_score_se"))


def rings(ax):
    return [c for c in ax.collections if c.get_label() == plots.ring_label()]


def only_ratio(trials: pl.DataFrame) -> pl.DataFrame:
    return trials.select([c for c in trials.columns if c in (
        "trial_id", "status", "started_at", "t2i_edit_ratio", "t2i_score", "edit_score", "score")
        or c.endswith("_se")])


def test_the_front_draws_error_bars_and_rings_the_noise_aware_set(every):
    trials = only_ratio(with_errors(every))
    (ax, _bar) = plots.front_by_axis(trials).axes
    done = plots.effects.finished(trials)
    (bars,) = [c for c in ax.containers if c.get_label() == "±1 SE"]
    x_bars, y_bars = bars.lines[2]  # horizontal then vertical bar segments, one per finished trial
    assert len(x_bars.get_segments()) == len(y_bars.get_segments()) == done.height
    (ring,) = rings(ax)
    kept = plots.pareto.noise_aware_front(done, plots.DEFAULT_OBJECTIVES)
    front = plots.pareto.pareto_front(done, plots.DEFAULT_OBJECTIVES)
    assert len(ring.get_offsets()) == kept.height > front.height  # SE 0.03 keeps trials off the front
    assert sorted(map(tuple, ring.get_offsets().tolist())) == sorted(kept.select("t2i_score", "edit_score").rows())
    assert "rings: not dominated beyond 2 SE; bars: ±1 SE" in ax.figure.get_suptitle()
    (knee,) = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_sizes().tolist() == [220]]
    best = plots.pareto.knee(front, plots.DEFAULT_OBJECTIVES)
    assert knee.get_offsets().tolist() == [[best["t2i_score"], best["edit_score"]]]  # the star stays on the front


def test_without_standard_errors_there_are_no_bars_and_the_rings_follow_the_strict_rule(every):
    (ax, _bar) = plots.front_by_axis(only_ratio(every)).axes
    assert not ax.containers
    done = plots.effects.finished(every)
    assert len(rings(ax)[0].get_offsets()) == plots.pareto.noise_aware_front(done, plots.DEFAULT_OBJECTIVES).height
    assert "rings: not strictly dominated (no SEs)" in ax.figure.get_suptitle()


def test_the_hypervolume_uses_the_runs_reference_and_names_its_source(every):
    reference = {"t2i_score": 0.4, "edit_score": 0.35, "source": {"t2i_score": "spec", "edit_score": "teacher@4"}}
    (ax,) = plots.hypervolume_curve(every, reference=reference).axes
    assert ax.get_title() == "reference:\nt2i_score = 0.4 (spec)\nedit_score = 0.35 (teacher@4)"
    (line,) = ax.get_lines()
    done = plots.effects.finished(every)
    assert line.get_ydata()[-1] == pytest.approx(plots.pareto.hypervolume(done, plots.DEFAULT_OBJECTIVES, [0.4, 0.35]))
    one_source = {**reference, "source": {"t2i_score": "teacher@4", "edit_score": "teacher@4"}}
    assert plots.hypervolume_curve(every, reference=one_source).axes[0].get_title() == (
        "reference: teacher@4\nt2i_score = 0.4, edit_score = 0.35")


def test_without_reference_json_the_worst_trial_stands_in_and_the_title_says_so(every):
    (ax,) = plots.hypervolume_curve(every).axes
    worst = plots.pareto.reference_point(plots.effects.finished(every), plots.DEFAULT_OBJECTIVES)
    assert ax.get_title().startswith("reference: worst trial (no reference.json)\n")
    assert f"t2i_score = {worst[0]:.3g}" in ax.get_title()
    partial = plots.hypervolume_curve(every, reference={"t2i_score": 0.4, "source": {"t2i_score": "spec"}})
    assert "edit_score = " in partial.axes[0].get_title() and "(worst trial (not in reference.json))" in (
        partial.axes[0].get_title())


def test_trials_not_better_than_the_reference_add_nothing(every):
    (ax,) = plots.hypervolume_curve(every, reference={"t2i_score": 0.99, "edit_score": 0.99}).axes
    assert set(ax.get_lines()[0].get_ydata()) == {0.0}
    assert [t.get_text() for t in ax.texts] == ["no trial beat the reference on every objective"]


def test_figures_read_the_runs_reference_json(tmp_path):
    run_dir = run_dir_varying_every_axis(tmp_path)
    assert plots.figures(run_dir)["hypervolume"][0].axes[0].get_title().startswith("reference: worst trial")
    (run_dir / "reference.json").write_text(
        '{"t2i_score": 0.3, "edit_score": 0.3, "source": {"t2i_score": "teacher@4", "edit_score": "teacher@4"}}')
    title = plots.figures(run_dir)["hypervolume"][0].axes[0].get_title()
    assert title == "reference: teacher@4\nt2i_score = 0.3, edit_score = 0.3"


def test_noise_table_shows_mean_and_se_and_both_fronts(every):
    table = plots.noise_table(with_errors(every))
    done = plots.effects.finished(every)
    assert table.columns == ["trial_id", "t2i_score ± SE", "edit_score ± SE", "on_front", "not_clearly_dominated"]
    assert table["trial_id"].to_list() == done["trial_id"].to_list()  # finished trials, in start order
    first = done.row(0, named=True)
    assert table.row(0)[1:3] == (f"{first['t2i_score']:.3f} ± 0.030", f"{first['edit_score']:.3f}")  # null SE
    assert table["on_front"].sum() < table["not_clearly_dominated"].sum()
    assert (table["not_clearly_dominated"] | ~table["on_front"]).all()
