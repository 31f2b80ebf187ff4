"""The saved MLflow runs-page view of a sweep and its address (orchestrator/tracking/view.py).

Run: .venv/bin/python -m pytest tests/test_tracking_view.py -q
tests/test_mlflow_ui.py opens the view in a real browser.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from orchestrator.tracking.view import VIEW_KEY, comparison_view, view_url


def test_the_view_shows_the_sweeps_trials_best_first_with_params_and_objectives():
    view = comparison_view("s1", ["t2i_edit_ratio", "category_mix"], [("fd", "min"), ("diversity", "max")])
    assert view == {
        "searchFilter": "tags.sweep_id = 's1' and tags.role = 'trial'",
        "orderByKey": "metrics.`fd`",
        "orderByAsc": True,  # the first objective is minimised: smallest on top
        "selectedColumns": ["params.`t2i_edit_ratio`", "params.`category_mix`", "metrics.`fd`", "metrics.`diversity`"],
    }
    assert comparison_view("s1", [], [("score", "max")])["orderByAsc"] is False


def test_the_url_opens_the_saved_view_or_the_experiments_list():
    url = view_url("http://127.0.0.1:5000/", "7")
    parts = urlsplit(url)
    assert url.startswith("http://127.0.0.1:5000/#/experiments/7/runs?")
    assert parse_qs(parts.fragment.partition("?")[2]) == {
        "workflowType": ["machine_learning"], "viewStateShareKey": [VIEW_KEY]
    }
    assert view_url("http://mlflow:5000", "") == "http://mlflow:5000/#/experiments"  # store was away: no id
