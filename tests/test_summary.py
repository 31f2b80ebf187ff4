"""The summary a sweep ends with (orchestrator/summary.py): trials best first, the Pareto set, the cause.

Run: .venv/bin/python -m pytest tests/test_summary.py -q
"""

from __future__ import annotations

import polars as pl
import pytest
from rich.console import Console

from orchestrator.results import Tables
from orchestrator.spec import load_spec
from orchestrator.summary import no_result_cause, print_summary, shown_metrics, sorted_trials

SPEC = """\
name: mix
base: {eval_items: 16, eval_items_quick: 8}
search:
  t2i_edit_ratio: {float: [0.1, 0.9]}
  category_mix: {simplex: [landscape, text]}
objectives: [{metric: t2i_score, mode: max}, {metric: fd, mode: min}]
"""


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "mix.yaml"
    path.write_text(SPEC)
    return load_spec(path)


@pytest.fixture()
def trials():
    return pl.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"],
        "status": ["FAILED", "STOPPED", "FINISHED", "FINISHED", "FINISHED"],
        "error": ["ValueError: bad", None, None, None, None],
        "t2i_edit_ratio": [0.2, 0.3, 0.5, 0.7, 0.9],
        "category_mix.text": [0.1, 0.4, 0.5, 0.6, 0.9],
        "lr_generator": [1e-4] * 5,  # not swept: not shown
        "t2i_score": [None, 0.9, 0.6, 0.6, 0.2],
        "fd": [None, 1.0, 3.0, 2.0, 1.0],
        "score": [None, 0.9, 0.5, 0.55, 0.3],
        "wall_s": [1.0, 4.0, 10.0, 11.4, 9.6],
    })


def test_trials_are_sorted_finished_first_then_by_each_objective_in_turn(spec, trials):
    tables = Tables(trials, pl.DataFrame(), trials.clear())
    # finished: t2i_score descending, ties broken by fd ascending; then stopped; then failed
    assert sorted_trials(tables, spec)["trial_id"].to_list() == ["d", "c", "e", "b", "a"]


def test_summary_shows_swept_params_objectives_and_the_pareto_set(spec, trials):
    console = Console(record=True, width=160)
    print_summary(Tables(trials, pl.DataFrame(), trials.filter(pl.col("trial_id").is_in(["d", "e"]))), spec, console)
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "trial" in line and "status" in line).split()
    assert header == ["trial", "status", "t2i_edit_ratio", "category_mix.text", "t2i_score", "fd", "score", "wall", "s"]
    rows = [line.split() for line in lines if line.split()[1:2] in (["FINISHED"], ["STOPPED"], ["FAILED"])]
    assert [row[0] for row in rows] == ["d*", "c", "e*", "b", "a"]
    assert rows[0] == ["d*", "FINISHED", "0.7", "0.6", "0.6", "2", "0.55", "11"]
    assert rows[-1] == ["a", "FAILED", "0.2", "0.1", "-", "-", "-", "1"]
    assert "* Pareto set on t2i_score, fd: 2 trials" in lines
    assert "  a failed: ValueError: bad" in lines


def test_summary_says_which_benchmark_the_scores_come_from(spec, trials):
    console = Console(record=True, width=160)
    print_summary(Tables(trials, pl.DataFrame(), trials.head(1)), spec, console)
    text = console.export_text()
    assert "STOPPED trials: scores from the quick benchmark (8 items)" in text
    assert "FINISHED ones from the full benchmark (16 items)" in text
    console = Console(record=True, width=160)
    finished = trials.filter(pl.col("status") == "FINISHED")
    print_summary(Tables(finished, pl.DataFrame(), finished.head(1)), spec, console)
    assert "quick benchmark" not in console.export_text()


def test_no_result_cause_names_the_most_common_error():
    def tables(status, error):
        return Tables(pl.DataFrame({"status": status, "error": error}, schema={"status": pl.String, "error": pl.String}),
                      pl.DataFrame(), pl.DataFrame())

    assert no_result_cause(tables(["FAILED", "STOPPED"], ["X: y", None])) is None  # a stopped trial has a result
    assert no_result_cause(tables([], [])) == "no trial ran"
    assert no_result_cause(tables(["RUNNING"], [None])) == "no trial finished (1 trials, none with an error)"
    cause = no_result_cause(tables(["FAILED"] * 3, ["ValueError: a", "ValueError: a", "OSError: b"]))
    assert cause == "no trial finished: 3 of 3 failed, 2 with ValueError: a"


def test_the_console_shows_the_objectives_then_score_once(spec, tmp_path):
    assert shown_metrics(spec) == ["t2i_score", "fd", "score"]
    path = tmp_path / "score.yaml"
    path.write_text(SPEC.replace("{metric: fd, mode: min}", "{metric: score, mode: max}"))
    assert shown_metrics(load_spec(path)) == ["t2i_score", "score"]
