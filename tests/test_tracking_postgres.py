"""A sweep tracked to a cluster's tracking store: `mlflow server` on PostgreSQL, artifacts in a shared folder.

    .venv/bin/python -m pytest tests/test_tracking_postgres.py -q

The store of docs/cluster.md, for real and on one machine: a PostgreSQL started from Debian's binaries
(tests/postgres_server.py) and `mlflow server --backend-store-uri postgresql+psycopg2://...
--artifacts-destination <folder>` on it (tests/mlflow_server.py), which the sweep reaches as
`tracking.uri: http://127.0.0.1:<port>`, as every node of a cluster does. One micro sweep (FIFO, 2
trials) is tracked there once per module; the tests check it as tests/test_mlflow_ui.py checks the
sqlite one (REST API and the rendered runs page), plus where it landed: the runs are rows of
PostgreSQL's `runs` table, and the artifacts files in the destination folder, uploaded through the
server (the nodes need no share of that folder).

Skipped, with the reason, without PostgreSQL binaries (`make test` installs Debian's postgresql) and,
for the page, without chromium.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from mlflow_server import Server, mlflow_server
from postgres_server import Postgres, postgres_server
from sweep_helpers import write_spec
from test_mlflow_ui import SweepRuns, check_rest_api, check_runs_page, skip_without_chromium

from orchestrator.spec import load_spec
from orchestrator.sweep.engine import run_sweep

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class TrackedSweep:
    """A finished sweep, its server and the server's stores (database and artifacts folder)."""

    spec: Path
    server: Server
    database: Postgres
    artifacts: Path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, micro_checkpoints):
    """The micro sweep tracked to `mlflow server` on PostgreSQL; both stay up for the module's tests."""
    folder = tmp_path_factory.mktemp("postgres_sweep")
    artifacts = folder / "artifacts"
    with postgres_server() as database, mlflow_server(database.store_uri, artifacts=artifacts) as server:
        # FIFO: every trial reaches its last step, which check_rest_api expects of each child's history.
        spec = write_spec(folder, micro_checkpoints, name="micro_pg", scheduler=None,
                          budget={"trials": 2, "concurrent": 2}, tracking={"uri": server.url})
        run_sweep(load_spec(spec), runs_dir=folder / "runs")
        yield TrackedSweep(spec, server, database, artifacts)


def runs_in_postgres(database: Postgres, experiment: str) -> dict[str, str]:
    """run id -> status of the experiment's runs, read from MLflow's tables in PostgreSQL itself."""
    with psycopg2.connect(database.uri) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.run_uuid, r.status FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id"
            " WHERE e.name = %s AND r.lifecycle_stage = 'active'",
            (experiment,),
        )
        rows = cursor.fetchall()
    connection.close()  # `with` on a psycopg2 connection ends the transaction, not the connection
    return dict(rows)


def stored_files(tracked: TrackedSweep, run: dict) -> set[str]:
    """The files of a run's artifacts in the server's destination folder (relative to the run's root).

    A run the server created has artifact URI mlflow-artifacts:/<experiment>/<run>/artifacts: the
    client sent the files to the server, which wrote them under --artifacts-destination."""
    uri = run["info"]["artifact_uri"]
    assert uri.startswith("mlflow-artifacts:/"), f"artifacts bypassed the server: {uri}"
    root = tracked.artifacts / uri.removeprefix("mlflow-artifacts:/").lstrip("/")
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def test_the_sweep_lives_in_postgres_and_the_artifacts_folder(tracked):
    spec = load_spec(tracked.spec)
    runs: SweepRuns = check_rest_api(tracked.server, tracked.spec)  # one parent, one child per trial
    expected = {run["info"]["run_id"] for run in [runs.parent, *runs.children]}
    in_postgres = runs_in_postgres(tracked.database, spec.name)
    assert set(in_postgres) == expected, f"PostgreSQL holds {in_postgres}, the server shows {expected}"
    assert set(in_postgres.values()) == {"FINISHED"}, in_postgres
    assert {"spec.yaml", "trials.parquet"} <= stored_files(tracked, runs.parent)
    for child in runs.children:
        assert {"recipe.yaml", "samples.png"} <= stored_files(tracked, child), child["info"]["run_name"]


def test_runs_page_lists_the_trials_in_a_browser(tracked, tmp_path):
    skip_without_chromium()
    check_runs_page(tracked.server, tracked.spec, tmp_path / "mlflow_runs_postgres.png")
