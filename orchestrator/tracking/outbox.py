"""A durable outbox for the sweep's MLflow writes: journaled first, delivered in order, kept while the store is away.

    box = Outbox(RunDir(run_dir), deliver, store=uri)   # journal, staged files and log in the run folder
    box.put({"op": "report", "trial": "ab12", ...}, files=[samples_png])   # appended and fsynced
    box.flush()                                                            # delivered, oldest first

Every write of the tracker (orchestrator/tracking/callback.py) goes through here. It is appended to
the journal (`runs/<name>/mlflow_pending.jsonl`, one JSON object a line, fsynced) before anything is
sent, and the files it uploads are copied to the staging folder beside it first
(`runs/<name>/mlflow_pending/<entry id>/`: Tune prunes old checkpoints). `flush` hands the entries to
`deliver` in order and rewrites the journal without the delivered ones; an empty journal is deleted,
so the file exists only while writes are pending.

A store that is unreachable (connection refused or reset, a timeout, HTTP 5xx, a locked database)
stops the delivery at that entry and the rest waits, on disk. One console line says that the store
went away, one that it is back; while it is away delivery is tried again at most every `RETRY_S`
seconds, with one quick HTTP attempt instead of MLflow's minutes of back-off (`http_policy`), so the
training is not held up. Any other error means the write itself is wrong (a 4xx, a bug): it is
shown on the console and in driver.log and the entry is dropped, so the ones after it still go.

An entry is removed only after `deliver` returned, so one whose answer was lost (the store died
mid-request, the driver was killed before the rewrite) is delivered again by the next flush or the
next process (`--resume`): `deliver` must be idempotent. One process writes a journal at a time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.rundir import RunDir
from orchestrator.tracking.store import is_unreachable, reason

RETRY_S = 5.0  # while the store is away, try again at most this often (a forced flush always tries)

# MLflow reads these for every request. Its defaults (7 retries, back-off factor 2, 120 s timeout)
# would hold the Tune loop for minutes on every write while the store is away; the outbox retries instead.
# (And a server's client prints "🏃 View run ... at: URL" for every run it ends: the sweep prints its own.)
QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
UP_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "30", **QUIET}  # a user's own setting wins
DOWN_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "5", **QUIET}  # one immediate retry: a stale keep-alive connection

_LOCK = threading.RLock()  # one flush (and one environment change) at a time in a process
T = TypeVar("T")


@dataclass
class _StoreState:
    """What this process knows of a store (shared by every outbox writing to it: one warning per outage)."""

    away_since: float | None = None  # time.monotonic() of the first failed write
    next_try: float = 0.0


_STORES: dict[str, _StoreState] = {}


@contextmanager
def http_policy(away: bool) -> Iterator[None]:
    """MLflow's HTTP retries and timeout for the writes in the block: short, and shorter while away.

    urllib3's "Retrying ..." warnings are muted meanwhile: they would reach the console once per
    failed write, and the outbox says itself, once, that the store is away.
    """
    with _LOCK:
        wanted = DOWN_HTTP if away else {k: v for k, v in UP_HTTP.items() if k not in os.environ}
        saved = {key: os.environ.get(key) for key in wanted}
        os.environ.update(wanted)
        retries = logging.getLogger("urllib3.connectionpool")
        level = retries.level
        retries.setLevel(logging.ERROR)
        try:
            yield
        finally:
            retries.setLevel(level)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def describe(entry: dict[str, Any]) -> str:
    """An entry in words, for log lines: `report (trial ab12, step 4)`."""
    details = [f"{key} {entry[key]}" for key in ("trial", "step") if key in entry]
    return entry.get("op", "?") + (f" ({', '.join(details)})" if details else "")


class Outbox:
    """Journaled writes to one store, delivered in order by `deliver(entry)` (see the module docstring).

    The journal, the staged files and the log lines go in the run folder `run`; `run` None keeps the
    entries in memory only (no run dir: tests, notebooks). `on_failure` is called after a delivery
    failed on an unreachable store (caches of what the store holds may be stale).
    """

    def __init__(
        self,
        run: RunDir | None,
        deliver: Callable[[dict[str, Any]], None],
        *,
        store: str,
        on_failure: Callable[[], None] | None = None,
    ):
        self.journal = run.journal if run else None
        self.staging = run.outbox_files if run else None
        self.log_file = run.driver_log if run else None
        self.deliver, self.store, self.on_failure = deliver, store, on_failure
        self._memory: list[dict[str, Any]] = []
        self._tail_checked = False

    @property
    def away(self) -> bool:
        return _STORES.setdefault(self.store, _StoreState()).away_since is not None

    # -- the journal --------------------------------------------------------------------------------

    def put(self, entry: dict[str, Any], files: Iterable[Path] = ()) -> None:
        """Keep one write (durably, with copies of the files it uploads) until it is delivered."""
        entry = {"id": uuid.uuid4().hex[:16], **entry}
        if self.journal is None:
            self._memory.append({**entry, "files": [str(Path(f).resolve()) for f in files]})
            return
        with _LOCK:
            entry["files"] = [self._stage(entry["id"], Path(f)) for f in files]
            line = json.dumps(entry, separators=(",", ":")) + "\n"
            with self.journal.open("ab") as out:
                if not self._tail_checked and out.tell() > 0:
                    # A process killed mid-append leaves a line without its newline: end it, so
                    # that only that torn line is unreadable, not the next one too.
                    with self.journal.open("rb") as src:
                        src.seek(-1, os.SEEK_END)
                        if src.read(1) != b"\n":
                            out.write(b"\n")
                self._tail_checked = True
                out.write(line.encode())
                out.flush()
                os.fsync(out.fileno())

    def _stage(self, entry_id: str, path: Path) -> str:
        """A copy of `path` in the staging folder's <entry id>/ (fsynced), as a path relative to the journal's folder."""
        folder = self.staging / entry_id
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / path.name
        shutil.copyfile(path, copy)
        with copy.open("rb") as written:
            os.fsync(written.fileno())
        return str(copy.relative_to(self.journal.parent))

    def pending(self) -> list[dict[str, Any]]:
        """The entries not delivered yet, oldest first."""
        if self.journal is None:
            return list(self._memory)
        return read_journal(self.journal)

    def _keep_only(self, delivered: list[dict[str, Any]], rest: list[dict[str, Any]]) -> None:
        if self.journal is None:
            self._memory = rest
            return
        if rest:
            tmp = self.journal.with_suffix(".jsonl.tmp")
            with tmp.open("w") as out:
                out.writelines(json.dumps(entry, separators=(",", ":")) + "\n" for entry in rest)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.journal)
        else:
            self.journal.unlink(missing_ok=True)
        for entry in delivered:
            shutil.rmtree(self.staging / entry["id"], ignore_errors=True)
        if not rest and self.staging.is_dir() and not any(self.staging.iterdir()):
            self.staging.rmdir()

    def _resolved(self, entry: dict[str, Any]) -> dict[str, Any]:
        root = self.journal.parent if self.journal is not None else Path("/")
        return {**entry, "files": [str(root / name) for name in entry.get("files", [])]}

    # -- delivery -----------------------------------------------------------------------------------

    def flush(self, force: bool = False) -> int:
        """Deliver the pending entries in order; returns how many left the journal.

        While the store is away this tries again only every RETRY_S seconds, unless `force`.
        """
        with _LOCK:
            state = _STORES.setdefault(self.store, _StoreState())
            if state.away_since is not None and not force and time.monotonic() < state.next_try:
                return 0
            entries = self.pending()
            if not entries:
                return 0
            done, failure = 0, None
            with http_policy(away=state.away_since is not None):
                for entry in entries:
                    try:
                        self.deliver(self._resolved(entry))
                    except Exception as exc:
                        if is_unreachable(exc):
                            failure = exc
                            break
                        self._rejected(entry, exc)
                    done += 1
            if done:
                self._keep_only(entries[:done], entries[done:])
            if failure is not None:
                self._went_away(state, failure, entries[done])
            elif state.away_since is not None:
                self._came_back(state, done)
            return done

    def query(self, read: Callable[[], T], default: T) -> T:
        """A read from the store (no journal), `default` if the store is away or refuses it (a store
        that failed less than RETRY_S ago is not asked)."""
        with _LOCK:
            state = _STORES.setdefault(self.store, _StoreState())
            if state.away_since is not None and time.monotonic() < state.next_try:
                return default
            try:
                with http_policy(away=state.away_since is not None):
                    return read()
            except Exception as exc:
                if is_unreachable(exc):
                    self._went_away(state, exc, None)
                else:
                    self.error(f"MLflow store {self.store} refused a read", exc)
                return default

    def _went_away(self, state: _StoreState, exc: BaseException, entry: dict[str, Any] | None) -> None:
        if self.on_failure is not None:
            self.on_failure()
        now = time.monotonic()
        state.next_try = now + RETRY_S
        if state.away_since is not None:
            return  # said once per outage
        state.away_since = now
        kept = f"writes are kept in {self.journal}" if self.journal else "writes are kept in memory"
        self.say(f"MLflow store {self.store} is away ({reason(exc)}); training goes on, {kept} until it is back")
        self._log("WARNING", f"store {self.store} unreachable at {describe(entry) if entry else 'a read'}:\n"
                  + "".join(traceback.format_exception(exc)))

    def _came_back(self, state: _StoreState, delivered: int) -> None:
        away_s = time.monotonic() - (state.away_since or time.monotonic())
        state.away_since = None
        self.say(f"MLflow store {self.store} is back after {away_s:.0f} s: {delivered} kept writes delivered")

    def _rejected(self, entry: dict[str, Any], exc: BaseException) -> None:
        shown = {k: v for k, v in entry.items() if k not in ("recipe", "metrics", "params")}
        self.error(f"MLflow store {self.store} rejected a write, dropped: {describe(entry)} {json.dumps(shown)}", exc)

    # -- messages -----------------------------------------------------------------------------------

    def error(self, what: str, exc: BaseException) -> None:
        """A bug to see (console, driver.log with the traceback), never one that stops the sweep."""
        self.say(f"{what}: {reason(exc)} (see {self.log_file or 'the traceback below'})")
        self._log("ERROR", f"{what}:\n" + "".join(traceback.format_exception(exc)))

    def say(self, text: str) -> None:
        """One console line (stdout, beside the sweep's progress lines) and the same in driver.log."""
        print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stdout, flush=True)
        self._log("INFO", text)

    def _log(self, level: str, text: str) -> None:
        if self.log_file is None:
            if level == "ERROR":
                print(text, file=sys.stderr, flush=True)
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            with self.log_file.open("a") as out:
                out.write(f"{stamp} {level} {__name__}: {text.rstrip()}\n")
        except OSError:
            pass  # the console line was shown; a log we cannot write must not stop the sweep


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The entries of a journal file, oldest first ([] if there is none); a torn line is skipped."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the half-written last line of a killed process: it was never delivered either
        if isinstance(entry, dict) and "op" in entry:
            entries.append(entry)
    return entries
