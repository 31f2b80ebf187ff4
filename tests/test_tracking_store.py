"""The MLflow store (orchestrator/tracking/store.py): where artifacts go, and "away" told from "wrong".

Run: .venv/bin/python -m pytest tests/test_tracking_store.py -q
"""

from __future__ import annotations

import sqlite3

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.tracking import MlflowClient

from orchestrator.tracking import store


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError("refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError("timed out"),
        RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "503"}),
        sqlite3.OperationalError("database is locked"),
    ],
    ids=["refused", "reset", "timeout", "http-5xx", "locked"],
)
def test_a_store_that_does_not_answer_is_away(exc):
    assert store.is_unreachable(exc)
    wrapped = MlflowException("API request failed")
    wrapped.__cause__ = exc  # MLflow wraps what the transport raised
    assert store.is_unreachable(wrapped)


@pytest.mark.parametrize(
    "exc",
    [RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "404"}), KeyError("a bug"),
     MlflowException("INVALID_PARAMETER_VALUE")],
    ids=["http-4xx", "bug", "mlflow-refusal"],
)
def test_a_write_the_store_refuses_is_wrong_not_away(exc):
    assert not store.is_unreachable(exc)


def test_reason_is_short_enough_for_a_console_line():
    refused = requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=5000): Max retries exceeded (Caused by NewConnectionError("
        "'<urllib3.connection.HTTPConnection>: Failed to establish a new connection: [Errno 111] Connection refused'))"
    )
    assert store.reason(refused) == "[Errno 111] Connection refused"
    busy = MlflowException("try later\nmore lines")
    busy.error_code = "TEMPORARILY_UNAVAILABLE"  # what a server's answer carries
    assert store.reason(busy) == "TEMPORARILY_UNAVAILABLE: try later"
    assert store.reason(MlflowException("no code")) == "MlflowException: no code"  # INTERNAL_ERROR: the type instead
    assert store.reason(KeyError("x")) == "KeyError: 'x'"


def test_artifacts_of_a_sqlite_store_go_beside_its_database(tmp_path):
    assert store.artifact_location(f"sqlite:///{tmp_path / 'm.db'}") == (tmp_path / "mlartifacts").resolve().as_uri()
    assert store.artifact_location("http://mlflow:5000") is None  # a server decides for itself


def test_open_store_creates_a_sqlite_store_and_leaves_a_server_alone(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    store.open_store(uri)
    assert (tmp_path / "m.db").is_file()
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["Default"]
    store.open_store("http://127.0.0.1:9")  # nothing listens there: not even asked
    assert store.DEFAULT_URI == "sqlite:///mlflow.db"
