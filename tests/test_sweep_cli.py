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
            {"worlds/real/world.yaml": "kind: diffusers\n"},
            ["spec.yaml:2: world: expected a world this version can load, found 'worlds/real': only the embedded world 'tiny'"],
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
    for flag in ("--dry-run", "-n N", "--resume", "--fresh", "--address"):
        assert flag in result.stdout


def test_resume_and_fresh_exclusive(tmp_path):
    result = _sweep(str(ROOT / "search_spaces" / "task_ratio.yaml"), "--resume", "--fresh", cwd=tmp_path)
    assert result.returncode == 2 and "not allowed with" in result.stderr
