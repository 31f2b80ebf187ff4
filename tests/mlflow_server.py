"""A real `mlflow server` for tests, the way a user starts one to compare a sweep's trials.

    with mlflow_server(folder / "mlflow.db") as server:   # server.url: http://127.0.0.1:<free port>
        requests.get(f"{server.url}/api/2.0/mlflow/experiments/get-by-name", ...)

The server binds 127.0.0.1 on a free port, runs in its own process group (uvicorn starts worker
processes: stopping the group stops them all, also when the test fails) and logs to `server.log`
beside the store. It is ready when `/health` answers; if it dies or never answers, `ServerError`
carries the end of its log so the failure says why.

A cluster's server (tests/test_tracking_postgres.py) keeps its runs in PostgreSQL and its artifacts in a
shared destination folder; the log goes beside that folder:

    with mlflow_server("postgresql://mlflow@127.0.0.1:5432/mlflow", artifacts=folder / "artifacts") as server:

An outage (tests/test_tracking_outage.py) stops the server and starts it again on the same port
over the same store:

    with ServerProcess(folder / "mlflow.db") as server:   # stopped on the way out, whatever happened
        server.start(); ...; server.stop(); ...; server.start()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests


class ServerError(RuntimeError):
    """The server exited or did not answer in time; the message holds the end of its log."""


@dataclass(frozen=True)
class Server:
    """A running server: its base URL and its log (for failure messages)."""

    url: str
    log: Path

    def log_tail(self) -> str:
        return log_tail(self.log)


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; taken by the server a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(log: Path, chars: int = 4000) -> str:
    text = log.read_text(errors="replace") if log.is_file() else "(no log)"
    return text[-chars:]


def server_command(backend: str, artifacts: Path, port: int) -> list[str]:
    """`mlflow server` over the backend store `backend` (a URI), serving artifacts from `artifacts`.

    A sqlite sweep's experiments keep the artifact location they were created with (an absolute path),
    and the server reads run artifacts from there. Anything created through this server (a sweep that
    tracks to it, a promotion run) gets `mlflow-artifacts:/...` and its files go to `artifacts`, through
    the server, instead of the server's working directory.
    """
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",  # one process is plenty for a test and light on a small machine
    ]


def server_env() -> dict[str, str]:
    """The environment, less MLflow's job runner: its half-dozen worker processes serve GenAI jobs
    (trace scoring), nothing a runs table needs, and they slow the start on a small machine a lot."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll `/health` until it answers 200; fail early if the server process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"mlflow server exited with {process.returncode}:\n{log_tail(log)}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.3)
    raise ServerError(f"mlflow server did not answer {url}/health within {timeout:.0f} s:\n{log_tail(log)}")


def stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the server's process group, then SIGKILL to whatever of it is left after `grace` s.

    The CLI process may exit before its uvicorn child does, so the group is killed either way.
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # all gone already
    process.wait()


class ServerProcess:
    """`mlflow server` over a store on one port (free when made), startable again after `stop`.

    `store` is a sqlite file (artifacts default to `mlartifacts/` beside it) or a backend-store URI
    such as postgresql://... (then `artifacts` is required). The server runs in, and logs to
    `server.log` in, the folder that holds the artifacts destination.
    """

    def __init__(self, store: Path | str, port: int | None = None, timeout: float = 90.0,
                 artifacts: Path | None = None):
        if isinstance(store, Path):
            self.backend, artifacts = f"sqlite:///{store}", artifacts or store.parent / "mlartifacts"
        elif artifacts is None:
            raise ValueError(f"{store}: a backend-store URI needs an artifacts destination")
        else:
            self.backend = store
        self.artifacts, self.port, self.timeout = artifacts, port or free_port(), timeout
        self.folder = artifacts.parent
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.folder / "server.log"
        self._process: subprocess.Popen | None = None
        self._starts = 0

    def start(self) -> Server:
        """Start it (the log is kept across restarts) and wait until it answers."""
        assert self._process is None, "already running"
        with self.log.open("a" if self._starts else "w") as out:
            if self._starts:
                out.write(f"--- restart {self._starts} on port {self.port}\n")
            self._process = subprocess.Popen(
                server_command(self.backend, self.artifacts, self.port), cwd=self.folder, stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # own process group, stopped as one
                env=server_env(),
            )
        self._starts += 1
        try:
            wait_ready(self.url, self._process, self.log, self.timeout)
        except ServerError:
            self.stop()
            raise
        return Server(self.url, self.log)

    def stop(self) -> None:
        """Stop it and every process it started (nothing listens on the port afterwards)."""
        if self._process is not None:
            stop(self._process)
            self._process = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def mlflow_server(
    store: Path | str, timeout: float = 90.0, artifacts: Path | None = None
) -> Iterator[Server]:
    """Serve `store` (a sqlite file or a backend-store URI; see ServerProcess) while the block runs."""
    with ServerProcess(store, timeout=timeout, artifacts=artifacts) as server:
        yield server.start()
