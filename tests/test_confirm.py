"""The confirmation stage's maths (orchestrator/confirm.py): its plan, the pooled SE and the verdict.

Run: .venv/bin/python -m pytest tests/test_confirm.py -q
The stage run end to end, killed and resumed: tests/test_resume.py.
"""

from __future__ import annotations

import math

import polars as pl
import pytest
from rich.console import Console

from orchestrator import confirm
from orchestrator.results import Tables
from orchestrator.search import recipe_params, trial_recipe
from orchestrator.spec import load_spec
from orchestrator.summary import print_summary


def _runs(values: dict[str, list[float]], status: dict[str, list[str]] | None = None) -> pl.DataFrame:
    rows = []
    for trial, scores in values.items():
        for k, score in enumerate(scores):
            state = (status or {}).get(trial, ["FINISHED"] * len(scores))[k]
            rows.append({"trial_id": f"{trial}-{k}", "confirm_of": trial, "seed": k + 1, "status": state,
                         "score": score if state == "FINISHED" else None})
    return pl.DataFrame(rows)


def test_the_se_is_the_pooled_seed_std_over_root_n():
    """Known answer: variances 0.0002 and 0.0008 (one degree of freedom each) pool to 0.0005;
    SE = √0.0005 / √2 for each recipe, whatever its own spread."""
    stats = confirm.confirmed(_runs({"a": [0.50, 0.52], "b": [0.40, 0.44]}), ["score"])
    row = {r["trial_id"]: r for r in stats.iter_rows(named=True)}
    assert row["a"]["score"] == pytest.approx(0.51) and row["b"]["score"] == pytest.approx(0.42)
    assert row["a"]["score_se"] == pytest.approx(math.sqrt(0.0005 / 2)) == row["b"]["score_se"]
    assert row["a"]["score_std"] == pytest.approx(math.sqrt(0.0002)) and row["a"]["seeds"] == 2


def test_runs_that_did_not_finish_are_not_counted():
    runs = _runs({"a": [0.50, 0.52, 0.9], "b": [0.40, 0.44]}, {"a": ["FINISHED", "FINISHED", "FAILED"]})
    stats = confirm.confirmed(runs, ["score"])
    assert stats.filter(pl.col("trial_id") == "a")["seeds"].item() == 2


def test_a_winner_only_when_ahead_beyond_two_se_of_the_difference():
    clear = confirm.judge(confirm.confirmed(_runs({"a": [0.50, 0.52], "b": [0.40, 0.44]}), ["score"]), "score", "max")
    # gap 0.09 > 2 · √(2 · 0.0005 / 2) = 0.0447
    assert clear.winner == "a" and clear.standings[1].verdict == "behind" and "winner: trial a" in clear.text()
    assert clear.standings[1].gap == pytest.approx(0.09) and clear.standings[1].gap_se == pytest.approx(math.sqrt(0.0005))
    close = confirm.judge(confirm.confirmed(_runs({"a": [0.50, 0.52], "b": [0.49, 0.51]}), ["score"]), "score", "max")
    assert close.winner is None and close.leader.trial_id == "a" and close.ties[0].trial_id == "b"
    assert close.text().startswith("no winner: trial a leads") and "cannot tell them apart" in close.text()


def test_the_verdict_follows_the_mode_and_handles_one_or_no_recipe():
    lower = confirm.judge(confirm.confirmed(_runs({"a": [0.50, 0.52], "b": [0.40, 0.44]}), ["score"]), "score", "min")
    assert lower.leader.trial_id == "b" and lower.winner == "b"
    alone = confirm.judge(confirm.confirmed(_runs({"a": [0.50, 0.52]}), ["score"]), "score", "max")
    assert alone.winner is None and "nothing to compare" in alone.text()
    assert "nothing to judge" in confirm.judge(pl.DataFrame(), "score", "max").text()


SPEC = """\
name: conf
base: {seed: 5, eval_items: 16, eval_items_quick: 8}
search:
  t2i_edit_ratio: {float: [0.1, 0.9], step: 0.1}
objectives: [{metric: score, mode: max}]
confirm: {top: 2, seeds: 3}
"""


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def test_the_plan_reruns_the_best_finished_trials_with_new_seeds(spec):
    trials = pl.DataFrame({"trial_id": ["a", "b", "c", "d"], "status": ["FINISHED", "STOPPED", "FINISHED", "FINISHED"],
                           "score": [0.5, 0.9, 0.6, 0.4]})
    configs = {t: {"t2i_edit_ratio": r} for t, r in zip("abcd", (0.2, 0.3, 0.4, 0.5), strict=True)}
    runs = confirm.plan(trials, configs, spec)
    # the stopped trial's quick score does not count; seeds are the recipe's (5) + 1 ... + 3
    assert [(r.confirm_of, r.seed) for r in runs] == [("c", 6), ("c", 7), ("c", 8), ("a", 6), ("a", 7), ("a", 8)]
    assert runs[0].config == {"t2i_edit_ratio": 0.4, "seed": 6, "confirm_of": "c"}
    assert recipe_params(runs[0].config) == {"t2i_edit_ratio": 0.4, "seed": 6}  # confirm_of is not a recipe field
    assert trial_recipe(spec.base, runs[0].config).seed == 6


def test_the_summary_shows_each_confirmed_recipe_and_the_verdict(spec):
    trials = pl.DataFrame({"trial_id": ["a", "b"], "status": ["FINISHED", "FINISHED"], "t2i_edit_ratio": [0.2, 0.4],
                           "score": [0.55, 0.53], "score_se": [0.02, 0.021], "wall_s": [1.0, 1.0]})
    console = Console(width=200, record=True)
    print_summary(Tables(trials, pl.DataFrame(), trials.clear(), _runs({"a": [0.50, 0.52], "b": [0.40, 0.44]})),
                  spec, console)
    out = console.export_text()
    assert "0.550±0.020" in out  # a search trial's score with its evaluation SE
    assert "confirmation: 4 of 4 runs finished" in out and "0.510±0.016" in out and "0.550" in out
    assert "verdict: winner: trial a" in out
