"""The trainable (orchestrator/trial.py) as Tune runs it: reports, checkpoints, the final grid, divergence.

Run: .venv/bin/python -m pytest tests/test_trial.py -q
Tune's session calls (`get_context`, `get_checkpoint`, `report`) are replaced by a recorder, so
the trial runs in this process on the micro world: no Ray cluster.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from ray import tune
from sweep_helpers import MICRO_BASE

from orchestrator import trial
from orchestrator.rundir import RunDir
from trainers.tinyworld.pretrain import MICRO_WORLD


class Session:
    """What a trial sees of Tune: its folder, a checkpoint to resume from, and where reports go."""

    def __init__(self, folder: Path, checkpoint: Path | None = None):
        self.folder, self.checkpoint = folder, checkpoint
        self.reports: list[tuple[dict, list[str]]] = []  # metrics, files of the checkpoint reported
        self.kept: dict[float, Path] = {}  # step -> a copy of its checkpoint (Tune's storage)
        self.events: list[str] = []

    def report(self, metrics: dict, checkpoint: tune.Checkpoint) -> None:
        folder = Path(checkpoint.path)
        self.reports.append((metrics, sorted(p.name for p in folder.iterdir())))
        self.kept[metrics["step"]] = Path(shutil.copytree(folder, self.folder / f"kept-{len(self.reports)}"))
        self.events.append("report")

    def install(self, monkeypatch) -> None:
        context = SimpleNamespace(get_trial_dir=lambda: str(self.folder), get_trial_id=lambda: "t0000001")
        monkeypatch.setattr(trial.tune, "get_context", lambda: context)
        monkeypatch.setattr(trial.tune, "get_checkpoint", lambda: self.checkpoint and tune.Checkpoint(str(self.checkpoint)))
        monkeypatch.setattr(trial.tune, "report", self.report)
        monkeypatch.setattr(trial.gate, "wait_to_finish", lambda trial_id: self.events.append(f"gate {trial_id}"))


def _world(micro_checkpoints) -> tuple[str, dict]:
    return ("tiny", {"checkpoints": str(micro_checkpoints), **MICRO_WORLD})


def test_every_report_goes_to_tune_with_a_checkpoint_and_the_last_with_the_grid(tmp_path, micro_checkpoints, monkeypatch):
    session = Session(tmp_path)
    session.install(monkeypatch)
    trial.run_trial({"t2i_edit_ratio": 0.5}, MICRO_BASE, _world(micro_checkpoints))
    steps = [metrics["step"] for metrics, _ in session.reports]
    assert steps == [2.0, 4.0] and session.reports[-1][0]["final"] == 1.0
    assert all(isinstance(v, float) for metrics, _ in session.reports for v in metrics.values())
    first, last = (files for _, files in session.reports)
    assert RunDir.SAMPLES_FILE not in first and RunDir.SAMPLES_FILE in last  # the grid comes with the final report
    assert set(first) < set(last)
    assert session.events == ["report", "gate t0000001", "report"]  # the finish gate holds the final report only


def test_a_retried_trial_resumes_from_its_checkpoint(tmp_path, micro_checkpoints, monkeypatch):
    first = Session(tmp_path / "first")
    first.folder.mkdir()
    first.install(monkeypatch)
    trial.run_trial({"t2i_edit_ratio": 0.5}, MICRO_BASE, _world(micro_checkpoints))
    retry = Session(tmp_path / "retry", checkpoint=first.kept[2.0])
    retry.folder.mkdir()
    retry.install(monkeypatch)
    trial.run_trial({"t2i_edit_ratio": 0.5}, MICRO_BASE, _world(micro_checkpoints))
    assert [metrics["step"] for metrics, _ in retry.reports] == [4.0]  # not from step 0
    assert retry.reports[0][0]["score"] == first.reports[-1][0]["score"]  # the same run, continued


def test_divergence_is_recorded_and_a_retry_fails_at_once(tmp_path, micro_checkpoints, monkeypatch):
    session = Session(tmp_path)
    session.install(monkeypatch)
    with pytest.raises(trial.TrialDivergedError, match="training diverged at generator step") as first:
        trial.run_trial({"lr_generator": 1e30}, MICRO_BASE, _world(micro_checkpoints))
    marker = tmp_path / RunDir.DIVERGED_FILE
    assert marker.read_text() == str(first.value) and session.reports == []
    # The retry does not even build its world: a world that cannot load would raise something else.
    with pytest.raises(trial.TrialDivergedError) as again:
        trial.run_trial({"lr_generator": 1e30}, MICRO_BASE, ("no-such-world", {}))
    assert str(again.value) == str(first.value)
