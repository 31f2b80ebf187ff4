"""Which MLflow store a command tracks to: --tracking-uri > MLFLOW_TRACKING_URI > the spec's tracking.uri > default.

Run: .venv/bin/python -m pytest tests/test_tracking_uri.py -q

In process, with the sweep engine replaced (tests/test_sweep_engine.py runs it) and promote stopped at
its store check: seconds.
"""

from __future__ import annotations

import pytest
from promote_helpers import fake_sweep, run_main

from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec, spec_hash
from orchestrator.tracking.store import DEFAULT_URI, ENV, tracking_uri

SPEC = "name: cli\nsearch:\n  t2i_edit_ratio: {float: [0.1, 0.9]}\nobjectives: [{metric: score, mode: max}]\n"
IN_SPEC = "sqlite:///from-spec.db"


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    """Whatever the shell running the tests exports does not count."""
    monkeypatch.delenv(ENV, raising=False)


def test_flag_then_environment_then_spec_then_default(monkeypatch):
    assert tracking_uri() == DEFAULT_URI == "sqlite:///mlflow.db"
    assert tracking_uri(None, IN_SPEC) == IN_SPEC
    monkeypatch.setenv(ENV, "")  # empty: unset, as for MLflow
    assert tracking_uri(None, IN_SPEC) == IN_SPEC
    monkeypatch.setenv(ENV, "http://mlflow:5000")
    assert tracking_uri(None, IN_SPEC) == "http://mlflow:5000"
    assert tracking_uri("http://other:5000", IN_SPEC) == "http://other:5000"


def _sweep_cli(tmp_path, monkeypatch, capsys, spec_text, *flags):
    """(the spec the engine got, stdout) of `python -m orchestrator.sweep` with the engine replaced."""
    import polars as pl

    from orchestrator.results import Tables
    from orchestrator.sweep import cli, engine

    seen = []

    def run_sweep(spec, **kwargs):
        seen.append(spec)
        info = engine.sweep_info(spec, "s1", RunDir(tmp_path / "runs" / spec.name))  # the engine's store
        trials = pl.DataFrame({"trial_id": ["t0"], "status": ["FINISHED"], "t2i_edit_ratio": [0.5], "score": [0.4],
                               "wall_s": [1.0], "error": [None]})
        return engine.SweepOutcome(tmp_path / "runs" / "cli", Tables(trials, pl.DataFrame(), trials), 1.0, info.uri, "7")

    monkeypatch.setattr(engine, "run_sweep", run_sweep)
    (tmp_path / "cli.yaml").write_text(spec_text)
    with pytest.raises(SystemExit) as exited:
        cli.main([str(tmp_path / "cli.yaml"), *flags])
    out, err = capsys.readouterr()
    assert exited.value.code == 0, err
    return seen.pop(), out


@pytest.mark.parametrize(
    "env, flags, expected",
    [
        (None, [], IN_SPEC),
        ("http://mlflow:5000", [], "http://mlflow:5000"),
        ("http://mlflow:5000", ["--tracking-uri", "sqlite:///flag.db"], "sqlite:///flag.db"),
    ],
    ids=["spec", "env-over-spec", "flag-over-env"],
)
def test_the_sweep_tracks_to_the_chosen_store_and_says_which(tmp_path, monkeypatch, capsys, env, flags, expected):
    if env:
        monkeypatch.setenv(ENV, env)
    spec, out = _sweep_cli(tmp_path, monkeypatch, capsys, SPEC + f"tracking: {{uri: '{IN_SPEC}'}}\n", *flags)
    assert spec.tracking.uri == expected  # the spec the sweep runs with: its spec.yaml names the store
    shown = f"compare the trials: {expected}/#/experiments/7" if expected.startswith("http") else (
        f"compare the trials: mlflow ui --backend-store-uri {expected} --host 127.0.0.1")
    assert shown in out


def test_a_spec_without_a_store_tracks_to_the_default(tmp_path, monkeypatch, capsys):
    spec, out = _sweep_cli(tmp_path, monkeypatch, capsys, SPEC)
    assert spec.tracking.uri == DEFAULT_URI and f"--backend-store-uri {DEFAULT_URI} " in out


def test_the_dry_run_shows_the_chosen_store(tmp_path, monkeypatch, capsys):
    from orchestrator.sweep import cli

    monkeypatch.setenv(ENV, "http://mlflow:5000")
    (tmp_path / "cli.yaml").write_text(SPEC)
    with pytest.raises(SystemExit) as exited:
        cli.main([str(tmp_path / "cli.yaml"), "--dry-run", "-n", "1"])
    assert exited.value.code == 0 and "tracking: {uri: 'http://mlflow:5000'}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.yaml"]


def test_the_store_and_the_storage_do_not_change_the_spec_hash(tmp_path):
    """So a --resume or a promotion through another address of the store (or another store) is not refused."""
    from orchestrator.sweep.engine import prepare_run_dir

    (tmp_path / "cli.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "cli.yaml")
    moved = spec.model_copy(update={"tracking": spec.tracking.model_copy(update={"uri": "http://127.0.0.1:5000"}),
                                    "storage": str(tmp_path)})
    assert spec_hash(moved) == spec_hash(spec)
    changed = spec.model_copy(update={"budget": spec.budget.model_copy(update={"trials": 3})})
    assert spec_hash(changed) != spec_hash(spec)
    run = RunDir.of(tmp_path / "runs", spec.name)
    sweep_id = prepare_run_dir(run, spec, resume=False, fresh=False, console=None)
    tracked_elsewhere = spec.model_copy(update={"tracking": moved.tracking})
    assert prepare_run_dir(run, tracked_elsewhere, resume=True, fresh=False, console=None) == sweep_id


@pytest.mark.parametrize("via", ["flag", "env", "flag-over-env"])
def test_promote_opens_the_chosen_store(tmp_path, micro_checkpoints, monkeypatch, capsys, via):
    """Stopped at the store check (the hand-made sweep logged nothing): the message names the store it tried."""
    run_dir, _ = fake_sweep(tmp_path, micro_checkpoints)
    flagged, exported = f"sqlite:///{tmp_path / 'flag.db'}", f"sqlite:///{tmp_path / 'env.db'}"
    if via != "flag":
        monkeypatch.setenv(ENV, exported)
    flags = ["--tracking-uri", flagged] if via != "env" else []
    code, out, err = run_main(capsys, run_dir, "--spec", tmp_path / "micro.yaml", *flags)
    expected = exported if via == "env" else flagged
    assert code == 2 and err.startswith(f"error: no MLflow store at {expected} "), err
    assert "--tracking-uri" in err
