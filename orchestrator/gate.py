"""A finish gate for fault-injection runs: trials hold before their final report until let through.

    DMD_SWEEPS_FINISH_GATE=/tmp/gate python -m orchestrator.sweep SPEC

Tests and the kill-soak benchmark kill drivers, workers and tracking servers *while trials run*. A
guessed sleep cannot promise that a trial is still running when the kill lands (on a fast machine
every micro trial may already be done), so the order of events is made certain instead, as Ray's
own tests do with a signal actor: with the variable set, every trial, once trained and evaluated,
announces itself and waits before its final report until it can take a pass:

    <gate>/waiting-<trial id>     written by the trial as it starts to wait (the test can see it)
    <gate>/pass-*                 one trial through each (taken by an atomic rename: never two)
    <gate>/open                   everyone through from now on

Nothing else changes: the trial's intermediate reports and checkpoints are all made before it
waits, and without the variable (every normal run) the gate does not exist.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

ENV = "DMD_SWEEPS_FINISH_GATE"
POLL_S = 0.05
HANG_S = 900.0  # turns a hang into an error; no order of events rests on it


def wait_to_finish(trial_id: str) -> None:
    """Block until the gate (if any) lets this trial report its final result."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    gate = Path(folder)
    gate.mkdir(parents=True, exist_ok=True)
    (gate / f"waiting-{trial_id}").touch()
    while not (gate / "open").exists():
        for token in sorted(gate.glob("pass-*")):
            try:
                token.rename(gate / f"passed-{trial_id}")  # atomic: of two racing trials one wins
            except FileNotFoundError:
                continue
            return
        time.sleep(POLL_S)


def waiting(folder: Path) -> set[str]:
    """Ids of trials that reached the gate (whether they have passed it since or not)."""
    return {path.name.removeprefix("waiting-") for path in Path(folder).glob("waiting-*")}


def passed(folder: Path) -> set[str]:
    """Ids of trials that took a pass."""
    return {path.name.removeprefix("passed-") for path in Path(folder).glob("passed-*")}


def let_through(folder: Path, n: int = 1) -> None:
    """Put n passes in the gate."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for _ in range(n):
        token = Path(folder) / f"pass-{time.monotonic_ns()}"
        token.touch()


def open_gate(folder: Path) -> None:
    """Let every trial through, now and later."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "open").touch()


def wait_until(
    condition: Callable[[], bool], what: str, alive: Callable[[], bool] | None = None, hang_s: float = HANG_S
) -> bool:
    """Poll until `condition()` holds (True) or `alive()` turns False (False): the caller waits for a
    state it can observe (a trial at the gate, a report recorded), never for a guessed time.
    Raises TimeoutError after `hang_s`, which only turns a hang into an error."""
    deadline = time.monotonic() + hang_s
    while not condition():
        if alive is not None and not alive():
            return False
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {hang_s:.0f} s")
        time.sleep(POLL_S)
    return True
