"""The sweep CLI as a user runs it: a real `python -m orchestrator.sweep` subprocess.

Run: .venv/bin/python -m pytest tests/test_sweep_cli.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "name: x\nsearch: !!python/object/apply:os.system ['touch pwned']\nobjectives: [{metric: score, mode: max}]\n",
            "spec.yaml:2: search: expected plain YAML values, found the tag !!python/object/apply:os.system",
        ),
        (
            "name: x\nbase: {nfe: 4}\nsearch:\n  teacher_switch_step: {int: [0, 6]}\nobjectives: [{metric: score, mode: max}]\n",
            "spec.yaml:4: search.teacher_switch_step.int: upper bound 6 gives an invalid recipe",
        ),
        (
            "name: x\nsearch:\n  t2i_edit_ratio: {float: [0.9, 0.1]}\nobjectives: [{metric: score, mode: max}]\nbudget: {trials: 0}\n",
            "spec.yaml:3: search.t2i_edit_ratio.float: expected lower bound < upper bound, found [0.9, 0.1]",
        ),
    ],
    ids=["python-tag", "switch-gt-nfe", "lo-gt-hi"],
)
def test_bad_spec_subprocess_exit_2_clean(text, expected, tmp_path):
    (tmp_path / "spec.yaml").write_text(text)
    result = _sweep("spec.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no runs/, no mlflow.db, no pwned


WORLD_NAMES_SPEC = """\
name: x
base: {category_mix: {landscape: 1, underwater: 1}}
search:
  specialist: {choice: [text, portrait]}
objectives: [{metric: t2i_score/underwater, mode: max}]
"""


@pytest.mark.parametrize(
    "flags, text, files, expected",
    [
        (
            [],
            WORLD_NAMES_SPEC,
            {},
            [
                "spec.yaml:2: base.category_mix.underwater: expected a category of world 'tiny' (landscape, portrait, text), found 'underwater'",
                "spec.yaml:4: search.specialist.choice: expected a specialist of world 'tiny' (text), found 'portrait'",
                "spec.yaml:5: objectives[0].metric: expected a category in t2i_score/<category> of world 'tiny'",
            ],
        ),
        (["--dry-run"], WORLD_NAMES_SPEC, {}, ["spec.yaml:2: base.category_mix.underwater:"]),
        (
            ["--dry-run"],
            "name: x\nworld: worlds/real\nsearch:\n  t2i_edit_ratio: {float: [0.1, 0.9]}\nobjectives: [{metric: score, mode: max}]\n",
            {"worlds/real/world.yaml": "kind: diffusers\n"},  # the world file's own problems, at its lines
            ["problems in the world file:", "worlds/real/world.yaml:1: pipeline: missing required key"],
        ),
    ],
    ids=["world-names", "world-names-dry-run", "world-folder-dry-run"],
)
def test_spec_against_its_world_exit_2_clean(flags, text, files, expected, tmp_path):
    """Names the world lacks and a world that does not resolve stop the sweep before anything starts."""
    for rel, content in files.items():
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_text(content)
    (tmp_path / "spec.yaml").write_text(text)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = _sweep("spec.yaml", *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    for line in expected:
        assert line in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, no mlflow.db


def test_missing_file_and_directory(tmp_path):
    for target in ("nope.yaml", "."):
        result = _sweep(target, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_dry_run_prints_spec_and_recipes(tmp_path):
    result = _sweep(str(ROOT / "search_spaces" / "joint.yaml"), "--dry-run", "-n", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "name: joint" in out and "First 5 recipes from the nsga2 sampler (seed 0)" in out
    for column in ("category_mix.landscape", "category_mix.text", "teacher_switch_step", "t2i_edit_ratio"):
        assert column in out
    assert ".raw." not in out  # raw simplex draws stay internal
    assert "#4" in out and "#5" not in out
    assert list(tmp_path.iterdir()) == []


def test_help_documents_every_flag(tmp_path):
    result = _sweep("--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in ("--dry-run", "-n N", "--resume", "--fresh", "--address", "--storage PATH_OR_URI", "--tracking-uri URI"):
        assert flag in result.stdout


def test_resume_and_fresh_exclusive(tmp_path):
    result = _sweep(str(ROOT / "search_spaces" / "task_ratio.yaml"), "--resume", "--fresh", cwd=tmp_path)
    assert result.returncode == 2 and "not allowed with" in result.stderr


# -- after the sweep: in process, with the engine replaced (tests/test_sweep_engine.py runs it) ---------

SPEC = "name: cli\nsearch:\n  t2i_edit_ratio: {float: [0.1, 0.9]}\nobjectives: [{metric: score, mode: max}]\n"


def _outcome(tmp_path, status: list[str], uri: str = "sqlite:///mlflow.db"):
    import polars as pl

    from orchestrator.results import Tables
    from orchestrator.sweep.engine import SweepOutcome

    trials = pl.DataFrame({
        "trial_id": [f"t{i}" for i in range(len(status))], "status": status,
        "error": [("ValueError: bad" if s == "FAILED" else None) for s in status],
        "t2i_edit_ratio": [0.5] * len(status), "score": [0.4] * len(status), "wall_s": [3.0] * len(status),
    })
    return SweepOutcome(tmp_path / "runs" / "cli", Tables(trials, pl.DataFrame(), trials.clear()), 12.3, uri, "7")


def _main(tmp_path, monkeypatch, capsys, outcome=None, error=None, *flags):
    from orchestrator.sweep import cli, engine

    def run_sweep(spec, **kwargs):
        if error is not None:
            raise engine.SweepError(error)
        return outcome

    monkeypatch.setattr(engine, "run_sweep", run_sweep)
    (tmp_path / "cli.yaml").write_text(SPEC)
    with pytest.raises(SystemExit) as exited:
        cli.main([str(tmp_path / "cli.yaml"), *flags])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def test_a_sweep_that_cannot_start_exits_1_with_its_reason(tmp_path, monkeypatch, capsys):
    code, out, err = _main(tmp_path, monkeypatch, capsys, error="runs/cli exists: use --resume")
    assert (code, out, err) == (1, "", "error: runs/cli exists: use --resume\n")


def test_a_finished_sweep_says_where_its_tables_are_and_how_to_compare_its_trials(tmp_path, monkeypatch, capsys):
    code, out, err = _main(tmp_path, monkeypatch, capsys, _outcome(tmp_path, ["FINISHED", "FAILED"]))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert f"cli: 2 trials in 12 s; tables in {tmp_path / 'runs' / 'cli'}" in lines
    assert "compare the trials: mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1" in lines
    assert lines[-1] == "  then open http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=trials"
    server = _outcome(tmp_path, ["FINISHED"], uri="http://mlflow:5000")
    code, out, _ = _main(tmp_path, monkeypatch, capsys, server)
    assert out.splitlines()[-1].startswith("compare the trials: http://mlflow:5000/#/experiments/7/runs?")


def test_a_sweep_without_a_result_exits_1_with_the_cause(tmp_path, monkeypatch, capsys):
    code, out, err = _main(tmp_path, monkeypatch, capsys, _outcome(tmp_path, ["FAILED", "FAILED"]))
    details = tmp_path / "runs" / "cli" / "trials.parquet"
    assert code == 1 and err == f"error: no trial finished: 2 of 2 failed, 2 with ValueError: bad (details: {details})\n"
    assert "t0 failed: ValueError: bad" in out and "compare the trials" not in out


def test_pending_mlflow_writes_are_named_with_the_command_that_delivers_them(tmp_path, monkeypatch, capsys):
    from orchestrator.rundir import RunDir

    outcome = _outcome(tmp_path, ["FINISHED"], uri="http://mlflow:5000")
    run = RunDir(outcome.run_dir)
    run.path.mkdir(parents=True)
    run.journal.write_text('{"op": "report", "trial": "t0", "step": 2}\n')
    code, out, _ = _main(tmp_path, monkeypatch, capsys, outcome, None, "--runs-dir", str(tmp_path / "runs"))
    spec = tmp_path / "cli.yaml"
    assert code == 0
    assert f"1 MLflow writes pending in {run.journal} (metric reports: 1; trials t0)\n" in out
    assert (f"  deliver them once http://mlflow:5000 is back: python -m orchestrator.sweep {spec} --resume "
            f"--runs-dir {tmp_path / 'runs'}\n") in out


@pytest.mark.slow
def test_a_sweep_whose_trials_all_fail_exits_1_with_the_cause(tmp_path, micro_checkpoints):
    """With its own Ray, shut down before the tables are read: their errors come from the run folder."""
    from sweep_helpers import write_spec

    spec = write_spec(
        tmp_path, micro_checkpoints, name="allcrash", search={"mixed_precision": {"grid": ["fp16"]}},
        objectives=[{"metric": "score", "mode": "max"}], sampler={"name": "grid", "seed": 0},
        scheduler=None, budget={"trials": 1, "concurrent": 1, "max_failures": 0},
    )
    result = _sweep(spec.name, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    cause = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(cause) == 1 and cause[0].startswith("error: no trial finished: 1 of 1 failed, 1 with ValueError: ")
    assert cause[0].endswith(f" (details: {tmp_path / 'runs' / 'allcrash' / 'trials.parquet'})")
