"""`python -m orchestrator.promote`: flags over the spec's defaults, input errors, exit statuses, output.

Run: .venv/bin/python -m pytest tests/test_promote_cli.py -q

Input errors are checked on hand-made run folders (nothing trains); the slow tests run the CLI on
the shared `micro_sweep`, once as a subprocess through `-m orchestrator.promote`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from promote_helpers import fake_sweep, ids, micro, run_main, runs, versions
from rich.console import Console
from sweep_helpers import write_spec

from orchestrator.promote.cli import _print_final, _print_seed_check, parse_args, settings
from orchestrator.promote.pick import candidates
from orchestrator.promote.seeds import SeedStats, seed_check
from orchestrator.promote.source import PromoteError, open_sweep
from orchestrator.rundir import RunDir
from trainers.recipe import Recipe

ROOT = Path(__file__).parent.parent


def test_flags_override_the_specs_promote_section(tmp_path, micro_checkpoints):
    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints, promote={"steps": 6, "pick": "knee"})
    sweep = open_sweep(run_dir, spec_path)
    spec_only = settings(sweep, parse_args([str(run_dir)]))
    assert spec_only == sweep.spec.promote and spec_only.steps == 6
    given = settings(sweep, parse_args([str(run_dir), "--pick", "best:edit_score", "--seeds", "3", "--top", "2"]))
    assert (given.pick, given.steps, given.seeds, given.top) == ("best:edit_score", 6, 3, 2)
    with pytest.raises(PromoteError, match="^--steps 0: Input should be greater than or equal to 1$"):
        settings(sweep, parse_args([str(run_dir), "--steps", "0"]))


def test_input_errors_exit_2_in_one_line(tmp_path, micro_checkpoints, capsys):
    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints)
    (tmp_path / "other").mkdir()
    other = write_spec(
        tmp_path / "other", micro_checkpoints, search={"guidance_scale": {"float": [1.0, 3.0]}}
    )
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir()
    RunDir(unfinished).marker.write_text(RunDir(run_dir).marker.read_text())
    cases = [
        ((tmp_path / "nope",), "no such run folder"),
        ((unfinished, "--spec", spec_path), "trials.parquet, "),
        ((run_dir,), "no spec.yaml in the run folder; pass the sweep's spec with --spec PATH"),
        ((run_dir, "--spec", other), "not the spec the sweep in"),
        ((run_dir, "--spec", spec_path, "--top", "1"), "--top 1: Input should be greater than or equal to 2"),
        ((run_dir, "--spec", spec_path, "--pick", "kneee"), "--pick kneee: expected knee, best"),
        ((run_dir, "--spec", spec_path, "--pick", "trial:zzz"), "--pick trial:zzz: no such trial"),
        ((run_dir, "--spec", spec_path), "no MLflow store at sqlite:///"),  # the fake sweep never logged
    ]
    for argv, message in cases:
        code, out, err = run_main(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert err.startswith("error: ")
    assert not (tmp_path / "mlflow.db").exists() and not RunDir(run_dir).promoted("any").parent.exists()


def test_a_broken_spec_lists_its_problems(tmp_path, micro_checkpoints, capsys):
    run_dir, spec_path = fake_sweep(tmp_path, micro_checkpoints)
    spec_path.write_text(spec_path.read_text().replace("name: micro", "name: micro\nbudgt: {}"))
    code, _, err = run_main(capsys, run_dir, "--spec", spec_path)
    assert code == 2 and err.startswith(f"{spec_path}: 1 problem(s) in the sweep spec:\n  ") and "budgt" in err


def _console() -> Console:
    return Console(width=160, record=True)  # main's width when the output is not a terminal


def test_seed_check_table_and_verdict(tmp_path, micro_checkpoints):
    sweep = open_sweep(*fake_sweep(tmp_path, micro_checkpoints))
    top = candidates(sweep, "knee")[:2]  # b, a
    stats = [
        SeedStats("b", [{"t2i_score": 0.6, "edit_score": 0.6, "score": 0.6}, {"t2i_score": 0.5, "edit_score": 0.7, "score": 0.62}]),
        SeedStats("a", [{"t2i_score": 0.9, "edit_score": 0.1, "score": 0.5}, {"t2i_score": 0.8, "edit_score": 0.2, "score": 0.5}]),
    ]
    console = _console()
    _print_seed_check(sweep, top, stats, seed_check(stats, "score", "max"), console)
    lines = console.export_text().splitlines()
    assert "seed check: mean ± std over 2 seeds (pick metric score)" in lines[0]
    assert lines[2].split() == ["trial", "t2i_edit_ratio", "t2i_score", "edit_score", "score"]
    assert lines[4].split() == ["leader", "b", "0.2", "0.5500", "±", "0.0707", "0.6500", "±", "0.0707", "0.6100", "±", "0.0141"]
    assert lines[5].split()[:3] == ["#2", "a", "0.1"]
    assert lines[-1] == "leader b leads a on score by 0.1100 > seed noise 0.0141 (the larger seed std of the two)"


def test_final_table_compares_the_student_with_the_teacher():
    models = {
        "student": {"score": 0.5, "t2i_score": 0.4, "edit_score": 0.6, "diversity": 0.3, "ms_per_sample": 1.0},
        "teacher@50": {"score": 0.7, "t2i_score": 0.7, "edit_score": 0.7, "diversity": 0.4, "ms_per_sample": 12.5},
        "teacher@2": {"score": 0.2, "t2i_score": 0.1, "edit_score": 0.3, "diversity": 0.2, "ms_per_sample": 0.5},
    }
    card = {"name": "micro-student", "scores": models, "benchmark_items": 16, "speedup": 12.5,
            "folder": "runs/micro/promoted/r1", "version": "3", "lineage": {"promotion_run_id": "r1"}}
    console = _console()
    _print_final(card, Recipe(nfe=2, guidance_scale=3.0), console)
    lines = console.export_text().splitlines()
    assert "micro-student: promoted student vs teacher (16 items)" in lines[0]
    assert lines[2].split() == ["model", "NFE", "score", "t2i_score", "edit_score", "diversity", "ms/sample"]
    assert lines[4].split() == ["student", "2", "0.5000", "0.4000", "0.6000", "0.3000", "1.00"]
    assert lines[5].split() == ["teacher@50", "(CFG", "3)", "50", "0.7000", "0.7000", "0.7000", "0.4000", "12.50"]
    assert lines[6].split()[:4] == ["teacher@2", "(CFG", "3)", "2"]
    assert lines[-3:] == [
        "speedup: 12.5× per sample (2-NFE student vs 50-step CFG teacher)",
        "saved runs/micro/promoted/r1",
        "registered micro-student version 3 (MLflow run r1)",
    ]


# -- end to end on the micro sweep ------------------------------------------------------------------


@pytest.mark.slow
def test_cli_subprocess_adds_a_version(micro_sweep, tmp_path):
    run_dir, uri, client = micro(micro_sweep)
    before = len(versions(client))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.promote",
            str(run_dir),
            "--spec",
            str(micro_sweep),
            "--pick",
            "best:edit_score",
            "--steps",
            "2",
            "--threads",
            "1",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(versions(client)) == before + 1
    assert f"registered micro-student version {before + 1}" in proc.stdout
    assert "--pick best:edit_score -> trial " in proc.stdout and "speedup:" in proc.stdout


@pytest.mark.slow
def test_seed_check_prints_mean_and_std_and_never_promotes_a_tie_silently(micro_sweep, capsys):
    run_dir, uri, client = micro(micro_sweep)
    count, before = len(versions(client)), len(runs(client))
    code, out, err = run_main(
        capsys, run_dir, "--spec", micro_sweep, "--seeds", "2", "--top", "2", "--steps", "2"
    )
    top = ids(candidates(open_sweep(run_dir, micro_sweep), "knee")[:2])
    rows = [line for line in out.splitlines() if any(t in line for t in top) and "±" in line]
    assert len(rows) == 2 and all(line.count("±") == 3 for line in rows), out  # t2i, edit, score
    assert "mean ± std over 2 seeds" in out
    # the verdict and the exit status agree; without a decisive lead nothing is written
    if code == 3:
        assert "<= seed noise" in out and "not promoting" in out
        assert len(versions(client)) == count and len(runs(client)) == before
    else:
        assert code == 0 and "> seed noise" in out and len(versions(client)) == count + 1


@pytest.mark.slow
def test_unknown_trial_on_the_real_sweep_writes_nothing(micro_sweep, capsys):
    run_dir, uri, client = micro(micro_sweep)
    before = len(runs(client))
    code, _, err = run_main(capsys, run_dir, "--spec", micro_sweep, "--pick", "trial:nope")
    trial_ids = pl.read_parquet(RunDir(run_dir).trials)["trial_id"].to_list()
    assert code == 2 and err.startswith("error: --pick trial:nope: no such trial")
    assert all(t in err for t in trial_ids) and len(runs(client)) == before
