"""orchestrator.reference: the hypervolume reference point of a sweep, on the micro world.

    .venv/bin/python -m pytest tests/test_reference.py -q

The teacher is scored for real (the micro teachers, the micro spec's 16 benchmark items), once per module:
the other tests check the file's reuse and writing, and count that nothing scores the teacher again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sweep_helpers import micro_spec

from orchestrator import reference
from orchestrator.rundir import RunDir
from trainers.evaluate import EvalConfig, evaluate_teacher
from trainers.world import shared_world

T2I_GIVEN = 0.25  # the spec's reference for t2i_score; edit_score is left to the teacher


@pytest.fixture(scope="module")
def spec(tmp_path_factory, micro_checkpoints):
    objectives = [{"metric": "t2i_score", "mode": "max", "reference": T2I_GIVEN},
                  {"metric": "edit_score", "mode": "max"}]
    return micro_spec(tmp_path_factory.mktemp("reference_spec"), micro_checkpoints, objectives=objectives)


@pytest.fixture(scope="module")
def teacher(spec) -> dict[str, float]:
    """The base teacher's scores at the base recipe's NFE, called directly (what the reference must equal)."""
    recipe = spec.base_recipe
    world = shared_world(spec.world.name, spec.world.options)
    return evaluate_teacher(world, world.load_teachers()["base"].model, recipe.nfe,
                            EvalConfig(items=recipe.eval_items), recipe.guidance_scale, recipe.timestep_shift)


@pytest.fixture()
def run(tmp_path) -> RunDir:
    run = RunDir.of(tmp_path / "runs", "micro")
    run.path.mkdir(parents=True)
    return run


@pytest.fixture()
def scored(monkeypatch, spec, teacher) -> list[int]:
    """Counts the calls that score the teacher (each answered with the directly computed scores)."""
    calls = []

    def fake(spec_):
        calls.append(1)
        return {o.metric: teacher[o.metric] for o in spec_.objectives}

    monkeypatch.setattr(reference, "teacher_reference", fake)
    return calls


def test_spec_reference_gives_none_where_the_spec_gives_nothing(spec):
    assert reference.spec_reference(spec) == {"t2i_score": T2I_GIVEN, "edit_score": None}
    assert reference.teacher_source(spec) == f"teacher@{spec.base_recipe.nfe}" == "teacher@4"


def test_teacher_reference_scores_the_base_teacher_at_the_base_nfe(spec, teacher):
    assert reference.teacher_reference(spec) == {"t2i_score": teacher["t2i_score"], "edit_score": teacher["edit_score"]}
    assert 0 < teacher["edit_score"] < 1


def test_spec_values_win_and_the_teacher_fills_the_rest(run, spec, teacher):
    assert reference.read_reference(run.path) is None
    values = reference.ensure_reference(run, spec)  # the teacher scored for real
    assert values == {"t2i_score": T2I_GIVEN, "edit_score": teacher["edit_score"]}
    assert list(values) == ["t2i_score", "edit_score"]  # the spec's order
    stored = json.loads(run.reference.read_text())
    assert stored == {**values, "source": {"t2i_score": "spec", "edit_score": "teacher@4"}}
    assert reference.read_reference(run.path) == reference.read_reference(run) == stored


def test_a_spec_giving_every_value_never_scores_the_teacher(run, spec, scored):
    given = spec.model_copy(update={"objectives": [o.model_copy(update={"reference": 0.1}) for o in spec.objectives]})
    assert reference.ensure_reference(run, given) == {"t2i_score": 0.1, "edit_score": 0.1}
    assert scored == []
    assert reference.read_reference(run)["source"] == {"t2i_score": "spec", "edit_score": "spec"}


def test_the_file_is_reused_not_recomputed(run, spec, scored):
    reference.ensure_reference(run, spec)
    stored = json.loads(run.reference.read_text())
    run.reference.write_text(json.dumps({**stored, "edit_score": 0.123}))  # edited by hand
    assert reference.ensure_reference(run, spec) == {"t2i_score": T2I_GIVEN, "edit_score": 0.123}
    assert scored == [1]  # the first call only
    assert json.loads(run.reference.read_text())["edit_score"] == 0.123


def test_an_objective_the_file_lacks_is_filled_and_the_rest_kept(run, spec, teacher, scored):
    run.reference.write_text(json.dumps({"t2i_score": 0.5, "fd": 3.0, "source": {"t2i_score": "hand", "fd": "hand"}}))
    assert reference.ensure_reference(run, spec) == {"t2i_score": 0.5, "edit_score": teacher["edit_score"]}
    assert json.loads(run.reference.read_text()) == {
        "t2i_score": 0.5, "fd": 3.0, "edit_score": teacher["edit_score"],
        "source": {"t2i_score": "hand", "fd": "hand", "edit_score": "teacher@4"}}


def test_the_file_is_written_whole_or_not_at_all(run, spec, scored, monkeypatch):
    moved = []

    def no_rename(self: Path, target):
        moved.append((self, json.loads(self.read_text())))  # the tmp file is complete before the rename
        raise OSError("killed before the rename")

    with monkeypatch.context() as patched:
        patched.setattr(Path, "replace", no_rename)
        with pytest.raises(OSError, match="killed"):
            reference.ensure_reference(run, spec)
    assert not list(run.path.iterdir())  # never a half-written reference.json, nor a stale tmp file
    ((tmp, content),) = moved
    assert tmp.parent == run.path and tmp != run.reference and set(content) == {"t2i_score", "edit_score", "source"}
    reference.ensure_reference(run, spec)
    assert sorted(p.name for p in run.path.iterdir()) == ["reference.json"]
    assert scored == [1, 1]  # nothing was kept from the failed write: scored again


@pytest.mark.parametrize("content, problem", [
    ("[1, 2]", "expected a JSON object"),
    ("{", "invalid JSON"),
    ('{"t2i_score": "high", "edit_score": 0.2}', "expected a number for 't2i_score'"),
])
def test_a_broken_file_is_named(run, spec, content, problem, scored):
    run.reference.write_text(content)
    with pytest.raises(ValueError, match=problem):
        reference.ensure_reference(run, spec)
    assert scored == []
