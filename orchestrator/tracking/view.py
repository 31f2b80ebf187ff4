"""The MLflow runs-page view that compares a sweep's trials, and the address that opens it.

    view = comparison_view(sweep_id, ["t2i_edit_ratio"], [("t2i_score", "max")])
    view_url("http://127.0.0.1:5000", experiment_id)

The view is saved as an experiment tag, as the UI's Views -> Share does (tests/test_mlflow_ui.py
opens it in a browser).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

VIEW_KEY = "trials"
"""The view's name: the experiment tag is `mlflow.sharedViewState.<VIEW_KEY>`."""


def comparison_view(sweep_id: str, search_keys: list[str], objectives: list[tuple[str, str]]) -> dict[str, Any]:
    """The MLflow runs-page view for comparing a sweep's trials, saved as the UI's Views -> Share does.

    The latest sweep's trials as rows (an experiment keeps every sweep of its name; unfiltered, trials
    are folded under their parent run), the swept params and the objectives as columns, the best on
    the first objective on top. `objectives`: (metric, mode) pairs.
    """
    metric, mode = objectives[0]
    return {
        "searchFilter": f"tags.sweep_id = '{sweep_id}' and tags.role = 'trial'",
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": mode == "min",
        "selectedColumns": [f"params.`{key}`" for key in search_keys]
        + [f"metrics.`{name}`" for name, _ in objectives],
    }


def view_url(server: str, experiment_id: str) -> str:
    """The runs page with the saved comparison view (`workflowType`: MLflow 3 otherwise opens an
    experiment on its GenAI trace overview). Without an experiment id (the store was away when the
    sweep ended) the experiments list, where the sweep's experiment goes by its name."""
    if not experiment_id:
        return f"{server.rstrip('/')}/#/experiments"
    query = urlencode({"workflowType": "machine_learning", "viewStateShareKey": VIEW_KEY})
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"
