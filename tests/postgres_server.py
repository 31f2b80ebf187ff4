"""A real PostgreSQL for tests, from Debian's binaries: the backend store of a cluster's MLflow server.

    with postgres_server() as db:      # db.uri: postgresql://mlflow@127.0.0.1:<free port>/mlflow
        psycopg2.connect(db.uri)       # libpq's form
        mlflow_server(db.store_uri, artifacts=...)   # postgresql+psycopg2://...: SQLAlchemy's form
    # stopped (pg_ctl stop -m fast) and deleted on the way out

`initdb` makes a fresh cluster in a temporary folder; the server listens on 127.0.0.1 only, on a free
port, with its unix socket in that folder, and lets in user `mlflow` without a password from there
only (pg_hba.conf: `trust` for 127.0.0.1/32 and the folder's socket, nothing else). PostgreSQL refuses
to run as root, so when the tests run as root the server runs as Debian's `postgres` user (the
package creates it) and the folder is made outside pytest's root-only tmp tree and handed to it.

`postgres_server()` skips the test (with the reason) when there are no binaries under
/usr/lib/postgresql/*/bin: `make test` installs Debian's postgresql when apt-get can.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow_server import free_port, log_tail

BINARIES = Path("/usr/lib/postgresql")
RUN_AS = "postgres"  # the user Debian's postgresql package creates; used only when we are root
USER = DATABASE = "mlflow"
# Clients (the MLflow server, the test) come from this machine only, over TCP or the folder's socket.
HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
START_TIMEOUT_S = 60  # pg_ctl -w waits until the server accepts connections, at most this long


class PostgresError(RuntimeError):
    """initdb, pg_ctl or createdb failed; the message holds their output and the end of the log."""


@dataclass(frozen=True)
class Postgres:
    """A running server: the URI of its database (libpq's form), where it lives, and its log."""

    uri: str
    port: int
    folder: Path
    log: Path

    @property
    def store_uri(self) -> str:
        """The database as MLflow's `--backend-store-uri`, with the driver named: SQLAlchemy 2.1 reads a
        bare postgresql:// as psycopg 3, and the driver we ship is psycopg2 (psycopg2-binary)."""
        return self.uri.replace("postgresql://", "postgresql+psycopg2://", 1)

    def log_tail(self) -> str:
        return log_tail(self.log)


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = [initdb.parent for initdb in BINARIES.glob("*/bin/initdb") if initdb.parents[1].name.isdigit()]
    return max(found, key=lambda bin: int(bin.parent.name), default=None)


def skip_reason() -> str | None:
    """Why a PostgreSQL cannot be started here, or None when it can."""
    if bin_dir() is None:
        return (f"no PostgreSQL binaries under {BINARIES}/*/bin: `make test` installs Debian's postgresql "
                "with apt-get when it runs as root; or apt-get install postgresql")
    if os.geteuid() == 0 and not _user_exists(RUN_AS):
        return f"running as root and there is no `{RUN_AS}` user for PostgreSQL to run as (it refuses root)"
    return None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _as_server_user(command: list[str]) -> list[str]:
    """`command` as the user the server may run as: ourselves, or `postgres` when we are root."""
    return ["runuser", "-u", RUN_AS, "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], folder: Path, log: Path | None = None) -> None:
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = f"\n{log_tail(log)}" if log else ""
        output = f"{done.stdout}{done.stderr}{tail}"
        raise PostgresError(f"{' '.join(command)} exited with {done.returncode}:\n{output}")


def _server_folder() -> Path:
    """A fresh folder the server's user owns. Not under pytest's tmp_path: that tree is root-only (0700)."""
    folder = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(folder, user=RUN_AS, group=pwd.getpwnam(RUN_AS).pw_gid)
    return folder


def _init(bin: Path, data: Path, folder: Path) -> None:
    """A new cluster in `data` whose superuser is USER; UTF-8, C locale (no locale needs installing)."""
    _run(_as_server_user([str(bin / "initdb"), "-D", str(data), "-U", USER, "-E", "UTF8", "--no-locale",
                          "--auth=trust", "--no-sync"]), folder)
    (data / "pg_hba.conf").write_text(HBA)  # replaces initdb's (which also lets in ::1 and replication)


def _start(bin: Path, data: Path, folder: Path, port: int, log: Path) -> None:
    # fsync off: a throwaway database, and MLflow's schema migrations commit hundreds of times.
    options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={folder} -c fsync=off"
    _run(_as_server_user([str(bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                          "-w", "-t", str(START_TIMEOUT_S), "start"]), folder, log)


def _stop(bin: Path, data: Path, folder: Path) -> None:
    """Fast shutdown (rolls back open transactions, closes connections) and wait for it."""
    _run(_as_server_user([str(bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), folder)


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A PostgreSQL on 127.0.0.1 with an empty database DATABASE owned by USER, while the block runs."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    bin = bin_dir()
    folder = _server_folder()
    data, log, port = folder / "data", folder / "postgres.log", free_port()
    started = False
    try:
        _init(bin, data, folder)
        _start(bin, data, folder, port, log)
        started = True
        _run([str(bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE], folder, log)
        yield Postgres(f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}", port, folder, log)
    finally:
        try:
            if started:
                _stop(bin, data, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
