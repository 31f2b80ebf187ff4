"""What a sweep still has to write to MLflow, in one line for the console at the end of the sweep.

    pending_note(run_dir)   # "9 MLflow writes pending in runs/micro/mlflow_pending.jsonl (metric reports: 5, ...)"
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from orchestrator.rundir import RunDir
from orchestrator.tracking.outbox import read_journal

# The tracker's entries (orchestrator/tracking/writer.py delivers them), in words.
_KINDS = {
    "sweep_start": "sweep run started",
    "trial_start": "trial runs created or reopened",
    "report": "metric reports",
    "trial_end": f"trial runs closed (outcome, recipe.yaml, {RunDir.SAMPLES_FILE})",
    "sweep_end": "sweep run ended",
    "outputs": "table uploads",
}


def pending_note(run_dir: str | Path) -> str | None:
    """What the sweep in `run_dir` still has to write to MLflow, in one line; None if nothing."""
    path = RunDir(run_dir).journal
    entries = read_journal(path)
    if not entries:
        return None
    counts = Counter(entry["op"] for entry in entries)
    kinds = ", ".join(f"{_KINDS.get(op, op)}: {n}" for op, n in counts.items())
    trials = sorted({entry["trial"] for entry in entries if "trial" in entry})
    of_trials = f"; trials {', '.join(trials)}" if trials else ""
    return f"{len(entries)} MLflow writes pending in {path} ({kinds}{of_trials})"
