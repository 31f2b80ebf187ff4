"""A real `mlflow server` for tests, the way a user starts one to compare a sweep's trials.

    with mlflow_server(folder / "mlflow.db") as server:   # server.url: http://127.0.0.1:<free port>
        requests.get(f"{server.url}/api/2.0/mlflow/experiments/get-by-name", ...)

The server binds 127.0.0.1 on a free port, runs in its own process group (uvicorn starts worker
processes: stopping the group stops them all, also when the test fails) and logs to `server.log`
beside the store. It is ready when `/health` answers; if it dies or never answers, `ServerError`
carries the end of its log so the failure says why.
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


def server_command(db: Path, port: int) -> list[str]:
    """`mlflow server` over the sqlite store `db`.

    The sweep's experiments keep the artifact location they were created with (an absolute path), and
    the server reads run artifacts from there. Anything new (a run created through this server) goes
    to `mlartifacts/` beside the store instead of the server's working directory.
    """
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{db}",
        "--artifacts-destination", str(db.parent / "mlartifacts"),
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


@contextmanager
def mlflow_server(db: Path, timeout: float = 90.0) -> Iterator[Server]:
    """Serve the sqlite store `db` (UI + REST API) while the block runs."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = db.parent / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            server_command(db, port), cwd=db.parent, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # own process group, stopped as one
            env=server_env(),
        )
    try:
        wait_ready(url, process, log, timeout)
        yield Server(url, log)
    finally:
        stop(process)
