"""The pick rules: which finished trial promote takes (knee, best, best:<metric>, trial:<id>).

Run: .venv/bin/python -m pytest tests/test_promote_pick.py -q

Checked on hand-made trials tables (promote_helpers.TRIALS), in milliseconds; the knee is checked
against orchestrator.pareto's one definition of it.
"""

from __future__ import annotations

import pytest
from promote_helpers import fake_sweep, ids

from orchestrator import pareto
from orchestrator.promote.pick import candidates, pick_metric
from orchestrator.promote.source import PromoteError, open_sweep
from trainers.recipe import Recipe


def test_pick_orders_finished_trials(tmp_path, micro_checkpoints):
    sweep = open_sweep(*fake_sweep(tmp_path, micro_checkpoints))
    knee = candidates(sweep, "knee")
    # front {a, b, c} by distance to utopia (b; a and c tie and keep their order), then the next front {d}
    assert ids(knee) == ["b", "a", "c", "d"]
    front = pareto.pareto_front(sweep.finished(), pareto.objectives_of(sweep.spec))
    assert knee[0]["trial_id"] == pareto.knee(front, pareto.objectives_of(sweep.spec))["trial_id"]
    assert ids(candidates(sweep, "best")) == ["a", "b", "d", "c"]  # the first objective, t2i_score
    assert ids(candidates(sweep, "best:edit_score")) == ["c", "b", "d", "a"]
    assert ids(candidates(sweep, "trial:d")) == ["d"]
    assert sweep.recipe(knee[0]) == Recipe.from_params(sweep.spec.base, {"t2i_edit_ratio": 0.2})


def test_knee_of_one_objective_is_best(tmp_path, micro_checkpoints):
    run_dir, spec_path = fake_sweep(
        tmp_path, micro_checkpoints, objectives=[{"metric": "edit_score", "mode": "max"}]
    )
    sweep = open_sweep(run_dir, spec_path)
    assert ids(candidates(sweep, "knee")) == ids(candidates(sweep, "best")) == ["c", "b", "d", "a"]
    assert pick_metric(sweep, "knee") == ("edit_score", "max")


def test_pick_metric_ranks_by_the_rule(tmp_path, micro_checkpoints):
    sweep = open_sweep(*fake_sweep(tmp_path, micro_checkpoints))
    assert pick_metric(sweep, "knee") == ("score", "max")  # two objectives: the headline score
    assert pick_metric(sweep, "best") == ("t2i_score", "max")
    assert pick_metric(sweep, "best:fd") == ("fd", "min")  # not an objective: the metric's own direction
    assert pick_metric(sweep, "trial:b") == ("score", "max")


@pytest.mark.parametrize(
    "pick, message",
    [
        ("trial:zzz", "no such trial in .*; finished trials: a, b, c, d$"),
        ("trial:f", "the trial is STOPPED, not FINISHED; finished trials: a, b, c, d$"),
        ("best:fd", "no metric 'fd' in trials.parquet; metrics: t2i_score, edit_score, score"),
    ],
)
def test_bad_picks_name_the_valid_choices(pick, message, tmp_path, micro_checkpoints):
    sweep = open_sweep(*fake_sweep(tmp_path, micro_checkpoints))
    with pytest.raises(PromoteError, match=message):
        candidates(sweep, pick)


def test_no_finished_trials(tmp_path, micro_checkpoints):
    trials = [("a", "FAILED", None, None), ("b", "STOPPED", 0.2, 0.3), ("c", "FINISHED", float("nan"), 0.5)]
    sweep = open_sweep(*fake_sweep(tmp_path, micro_checkpoints, trials=trials))
    for pick in ("knee", "best"):  # a NaN objective is no value
        with pytest.raises(
            PromoteError,
            match=r"no finished trials with values for t2i_score, edit_score to promote \(1 FAILED, 1 FINISHED, 1 STOPPED\)$",
        ):
            candidates(sweep, pick)


def test_a_confirmation_stage_ranks_its_recipes_first_by_their_confirmed_means(tmp_path, micro_checkpoints):
    """Confirmed with new seeds, d beats b on every objective: d is now the knee and best:edit_score
    puts the confirmed recipes first (d, b), then the rest in their search order."""
    import polars as pl

    from orchestrator.rundir import RunDir

    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints)
    runs = pl.DataFrame({
        "trial_id": ["r1", "r2", "r3", "r4"], "confirm_of": ["b", "b", "d", "d"], "seed": [1, 2, 1, 2],
        "status": ["FINISHED"] * 4, "t2i_score": [0.50, 0.52, 0.60, 0.62], "edit_score": [0.50, 0.48, 0.60, 0.58],
    }).with_columns(score=(pl.col("t2i_score") + pl.col("edit_score")) / 2)
    runs.write_parquet(RunDir(run_dir).confirm_table)
    sweep = open_sweep(run_dir, spec_path)
    assert set(sweep.confirmed()["trial_id"]) == {"b", "d"}
    assert ids(candidates(sweep, "knee"))[:2] == ["d", "b"]
    assert ids(candidates(sweep, "best:edit_score")) == ["d", "b", "c", "a"]
    assert ids(candidates(sweep, "trial:a")) == ["a"]  # a named trial is a named trial
