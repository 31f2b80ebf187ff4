"""The MLflow store a sweep writes to: which one, its artifact folder, and whether it answers.

    uri = tracking_uri(args.tracking_uri, spec.tracking.uri)   # flag > MLFLOW_TRACKING_URI > spec > default
    open_store(uri)                      # creates a new sqlite store (seconds of schema migrations)
    is_unreachable(exc)                  # the store is away: keep the write; else the write is wrong
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient
from requests import exceptions as http
from urllib3.exceptions import HTTPError as TransportError

DEFAULT_URI = "sqlite:///mlflow.db"
"""MLflow's own default store, relative to the working directory (DESIGN §10)."""
ENV = "MLFLOW_TRACKING_URI"
"""MLflow's own variable for the store; the cluster images set it (docs/cluster.md)."""


def tracking_uri(flag: str | None = None, spec_uri: str | None = None) -> str:
    """The store a command tracks to: its --tracking-uri, else $MLFLOW_TRACKING_URI (empty: unset),
    else the spec's tracking.uri, else DEFAULT_URI.

    The environment beats the spec so that one image or cluster config points every spec, shipped or
    not, at its server; the flag beats both for the one command."""
    return flag or os.environ.get(ENV) or spec_uri or DEFAULT_URI


def artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store go beside its database file (MLflow's default would be ./mlruns of
    whichever folder the process happens to run in); a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()


def open_store(uri: str) -> None:
    """Touch the tracking store once, creating it (sqlite: schema migrations) if it is new.

    A server needs no creating: left alone, so that one that is away costs no retries here (the
    tracker keeps the sweep's writes until it is back)."""
    if uri.startswith(("http://", "https://")):
        return
    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def is_unreachable(exc: BaseException) -> bool:
    """Whether an error says the store is away (worth keeping the write), not that the write is wrong."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError | http.ConnectionError | http.Timeout
                      | http.RetryError | TransportError):
            return True
        if isinstance(current, RestException) and current.get_http_status_code() >= 500:
            return True
        if type(current).__name__ == "OperationalError":  # sqlalchemy / sqlite3: locked or missing database
            return True
        current = current.__cause__ or current.__context__
    return False


def reason(exc: BaseException) -> str:
    """A short why for a console line: `[Errno 111] Connection refused`, `TEMPORARILY_UNAVAILABLE: ...`."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if errno:
        return errno.group(0).strip()
    code = getattr(exc, "error_code", None)
    prefix = f"{code}: " if code and code != "INTERNAL_ERROR" else f"{type(exc).__name__}: "
    return prefix + (text.splitlines()[0][:200] if text else "")
