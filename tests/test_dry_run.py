"""`--dry-run` (orchestrator/sweep/dry_run.py): the resolved spec and the sampler's first recipes.

Run: .venv/bin/python -m pytest tests/test_dry_run.py -q
"""

from __future__ import annotations

import pytest
import yaml
from rich.console import Console

from orchestrator.spec import load_spec
from orchestrator.sweep.dry_run import print_dry_run, sample_params

SPEC = """\
name: dry
base: {specialist: text}
search:
  t2i_edit_ratio: {float: [0.1, 0.9], step: 0.1}
  teacher_switch_step: {int: [0, 4]}
  specialist_weight: {float: [0.3, 1.0], when: {teacher_switch_step: [1, 2, 3]}}
objectives: [{metric: score, mode: max}]
sampler: {name: random, seed: 3}
"""


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "dry.yaml"
    path.write_text(SPEC)
    return load_spec(path)


def test_the_first_params_are_the_samplers_and_the_same_every_time(spec):
    first = sample_params(spec, 6)
    assert first == sample_params(spec, 6) and len(first) == 6
    assert all(0.1 <= p["t2i_edit_ratio"] <= 0.9 and 0 <= p["teacher_switch_step"] <= 4 for p in first)
    # the conditional param is drawn exactly when its condition holds
    assert all(("specialist_weight" in p) == (p["teacher_switch_step"] in (1, 2, 3)) for p in first)


def test_it_prints_the_resolved_spec_then_one_column_per_recipe(spec):
    console = Console(record=True, width=160)
    print_dry_run(spec, 4, console)
    text = console.export_text()
    resolved, _, table = text.partition("First 4 recipes from the random sampler (seed 3):")
    assert yaml.safe_load(resolved)["name"] == "dry" and yaml.safe_load(resolved)["sampler"]["seed"] == 3
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.split()}
    assert rows["param"] == ["#0", "#1", "#2", "#3"]
    params = sample_params(spec, 4)
    assert rows["teacher_switch_step"] == [str(p["teacher_switch_step"]) for p in params]
    assert rows["specialist_weight"] == [f"{p['specialist_weight']:.3g}" if "specialist_weight" in p else "-" for p in params]
