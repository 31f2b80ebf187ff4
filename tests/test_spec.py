"""orchestrator.spec: every malformed spec gives exit 2 with `file:line: key.path: ...`, nothing else.

Each case goes through the CLI entry point (`orchestrator.sweep.cli.main`) in an empty tmp dir:
exit status 2, the expected line and key path on stderr, no traceback, no file created.
A hypothesis test then throws mutated specs at the loader: valid SweepSpec or clean SpecError only.
The parts have their own tests: test_yamlio, test_spec_base, test_entries, test_samplers,
test_validate, test_world_spec.

Run: .venv/bin/python -m pytest tests/test_spec.py -q
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.search import trial_recipe
from orchestrator.spec import SweepSpec, load_spec
from orchestrator.sweep.cli import main
from orchestrator.yamlio import SpecError

# Line numbers below refer to this text (1-based).
VALID = """\
name: t
base:
  steps: 60
  nfe: 4
search:
  t2i_edit_ratio: {float: [0.1, 0.9], step: 0.1}
objectives:
  - {metric: t2i_score, mode: max}
sampler: {name: tpe, seed: 0}
budget: {trials: 4, concurrent: 1}
"""


def _edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


def _add(text: str) -> str:
    return VALID + text


# (id, spec text, line, key path expected in the message, a word of the message)
CASES = [
    ("bad-yaml", _edit("[0.1, 0.9]", "[0.1, 0.9"), 6, "invalid YAML", "expected"),
    ("tab-indent", _edit("  nfe: 4", "\tnfe: 4"), 4, "invalid YAML", "character"),
    ("python-tag", _edit("name: t", "name: !!python/object/apply:os.system [echo hi]"), 1, "name", "tag"),
    ("custom-tag", _edit("  steps: 60", "  steps: !secret 60"), 3, "base.steps", "tag"),
    ("explicit-str-tag", _edit("  steps: 60", "  steps: !!str 60"), 3, "base.steps", "tag"),
    ("duplicate-top", _add("name: u\n"), 11, "name", "duplicate"),
    ("duplicate-nested", _edit("  nfe: 4", "  nfe: 4\n  nfe: 2"), 5, "base.nfe", "duplicate"),
    ("non-string-key", _edit("  steps: 60", "  1: 60"), 3, "base", "string keys"),
    ("unknown-top", _add("serach: {}\n"), 11, "serach", "did you mean 'search'"),
    ("unknown-base", _edit("  steps: 60", "  stepz: 60"), 3, "base.stepz", "did you mean 'steps'"),
    (
        "unknown-search-key",
        _edit("  t2i_edit_ratio:", "  t2i_edit_ration:"),
        6,
        "search.t2i_edit_ration",
        "did you mean 't2i_edit_ratio'",
    ),
    (
        "unknown-entry-key",
        _edit("step: 0.1", "stepp: 0.1"),
        6,
        "search.t2i_edit_ratio.stepp",
        "did you mean 'step'",
    ),
    (
        "unknown-budget-key",
        _edit("concurrent: 1", "concurent: 1"),
        10,
        "budget.concurent",
        "did you mean 'concurrent'",
    ),
    (
        "unknown-objective-key",
        _edit("mode: max}", "mode: max, weight: 1}"),
        8,
        "objectives[0].weight",
        "unknown key",
    ),
    ("unknown-sampler", _edit("name: tpe", "name: tpee"), 9, "sampler.name", "'tpe'"),
    (
        "unknown-sampler-option",
        _edit("seed: 0}", "seed: 0, options: {n_startup_trails: 3}}"),
        9,
        "sampler.options.n_startup_trails",
        "did you mean 'n_startup_trials'",
    ),
    (
        "sampler-option-type",
        _edit("seed: 0}", "seed: 0, options: {n_startup_trials: many}}"),
        9,
        "sampler.options.n_startup_trials",
        "expected int",
    ),
    (
        "sampler-refuses-option",
        _edit("name: tpe, seed: 0}", "name: nsga2, seed: 0, options: {population_size: 1}}"),
        9,
        "sampler.options",
        "population_size",
    ),
    (
        "unknown-metric",
        _edit("metric: t2i_score", "metric: t2i_scor"),
        8,
        "objectives[0].metric",
        "did you mean 't2i_score'",
    ),
    (
        "unknown-metric-group",
        _edit("metric: t2i_score", "metric: clip_score/text"),
        8,
        "objectives[0].metric",
        "unknown metric",
    ),
    ("bad-mode", _edit("mode: max", "mode: maximize"), 8, "objectives[0].mode", "'max' or 'min'"),
    (
        "no-objectives",
        _edit("  - {metric: t2i_score, mode: max}\n", "  []\n").replace(
            "objectives:\n  []", "objectives: []"
        ),
        7,
        "objectives",
        "at least 1",
    ),
    (
        "lo-gt-hi",
        _edit("[0.1, 0.9]", "[0.9, 0.1]"),
        6,
        "search.t2i_edit_ratio.float",
        "lower bound < upper bound",
    ),
    (
        "three-bounds",
        _edit("[0.1, 0.9], step: 0.1", "[0.1, 0.5, 0.9]"),
        6,
        "search.t2i_edit_ratio.float",
        "[lower, upper]",
    ),
    (
        "bounds-not-numbers",
        _edit("[0.1, 0.9], step: 0.1", "[low, high]"),
        6,
        "search.t2i_edit_ratio.float[0]",
        "number",
    ),
    (
        "log-lo-zero",
        _add("  guidance_scale: {float: [0, 6], log: true}\n")
        .replace("budget: {trials: 4, concurrent: 1}\n  guidance", "  guidance")
        .replace("search:\n", "search:\n  guidance_scale: {float: [0, 6], log: true}\n", 1)
        .replace("  guidance_scale: {float: [0, 6], log: true}\n", "", 1)
        + "",
        0,
        "",
        "",
    ),
    (
        "step-not-multiple",
        _edit("step: 0.1", "step: 0.3"),
        6,
        "search.t2i_edit_ratio.step",
        "multiple of the step",
    ),
    (
        "log-and-step",
        _edit("step: 0.1", "step: 0.1, log: true"),
        6,
        "search.t2i_edit_ratio.step",
        "either log or step",
    ),
    (
        "two-kinds",
        _edit("step: 0.1}", "step: 0.1, choice: [0.5]}"),
        6,
        "search.t2i_edit_ratio",
        "exactly one of",
    ),
    (
        "no-kind",
        _edit("{float: [0.1, 0.9], step: 0.1}", "{step: 0.1}"),
        6,
        "search.t2i_edit_ratio",
        "found none",
    ),
    (
        "empty-simplex",
        _add("").replace("search:\n", "search:\n  category_mix: {simplex: []}\n"),
        6,
        "search.category_mix.simplex",
        "at least 2",
    ),
    (
        "simplex-on-scalar",
        _edit("{float: [0.1, 0.9], step: 0.1}", "{simplex: [a, b]}"),
        6,
        "search.t2i_edit_ratio.simplex",
        "simplex only on",
    ),
    (
        "float-on-int-field",
        _add("").replace("search:\n", "search:\n  steps: {float: [10, 20]}\n"),
        6,
        "search.steps.float",
        "int",
    ),
    (
        "empty-choice",
        _edit("{float: [0.1, 0.9], step: 0.1}", "{choice: []}"),
        6,
        "search.t2i_edit_ratio.choice",
        "at least one value",
    ),
    (
        "ratio-outside-01",
        _edit("[0.1, 0.9]", "[0.1, 1.5]").replace(", step: 0.1", ""),
        6,
        "search.t2i_edit_ratio.float",
        "upper bound 1.5",
    ),
    (
        "ratio-in-base",
        _edit("  nfe: 4", "  nfe: 4\n  t2i_edit_ratio: 2"),
        5,
        "base.t2i_edit_ratio",
        "less than or equal to 1",
    ),
    (
        "switch-gt-nfe",
        _add("").replace("search:\n", "search:\n  teacher_switch_step: {int: [0, 6]}\n"),
        6,
        "search.teacher_switch_step.int",
        "expected <= nfe (4), found 6",
    ),
    (
        "switch-choice-gt-nfe",
        _add("").replace("search:\n", "search:\n  teacher_switch_step: {choice: [1, 5]}\n"),
        6,
        "search.teacher_switch_step.choice",
        "choice 5",
    ),
    (
        "joint-nfe-and-switch",
        _add("").replace(
            "search:\n", "search:\n  nfe: {int: [2, 4]}\n  teacher_switch_step: {int: [0, 3]}\n"
        ),
        7,
        "search.teacher_switch_step",
        "combination",
    ),
    (
        "bad-choice-for-literal",
        _add("").replace("search:\n", 'search:\n  mixed_precision: {choice: ["no", fp32]}\n'),
        6,
        "search.mixed_precision.choice",
        "fp32",
    ),
    (
        "when-unknown-param",
        _add("").replace(
            "search:\n", "search:\n  specialist_weight: {float: [0.3, 1.0], when: {teacher_switch: 1}}\n"
        ),
        6,
        "search.specialist_weight.when.teacher_switch",
        "unknown 'teacher_switch'",
    ),
    (
        "when-later-param",
        _add("").replace(
            "search:\n", "search:\n  specialist_weight: {float: [0.3, 1.0], when: {t2i_edit_ratio: 0.5}}\n"
        ),
        6,
        "search.specialist_weight.when.t2i_edit_ratio",
        "listed after it",
    ),
    (
        "when-value-outside",
        _add("").replace(
            "search:\n",
            "search:\n  teacher_switch_step: {int: [0, 4]}\n  specialist_weight: {float: [0.3, 1.0], when: {teacher_switch_step: [7]}}\n",
        ),
        7,
        "search.specialist_weight.when.teacher_switch_step",
        "expected values",
    ),
    (
        "grid-with-float",
        _edit("name: tpe", "name: grid").replace(", step: 0.1", ""),
        6,
        "search.t2i_edit_ratio.float",
        "grid sampler",
    ),
    (
        "grid-too-small",
        _edit("name: tpe", "name: grid").replace("trials: 4", "trials: 40"),
        10,
        "budget.trials",
        "grid's size",
    ),
    (
        "multi-objective-asha",
        _add("scheduler: {name: asha}\n").replace(
            "  - {metric: t2i_score, mode: max}\n",
            "  - {metric: t2i_score, mode: max}\n  - {metric: edit_score, mode: max}\n",
        ),
        12,
        "scheduler",
        "explicit scalar metric",
    ),
    (
        "duplicate-objective",
        _edit(
            "  - {metric: t2i_score, mode: max}\n",
            "  - {metric: t2i_score, mode: max}\n  - {metric: t2i_score, mode: min}\n",
        ),
        9,
        "objectives[1].metric",
        "distinct",
    ),
    ("trials-zero", _edit("trials: 4", "trials: 0"), 10, "budget.trials", "greater than or equal to 1"),
    ("trials-string", _edit("trials: 4", "trials: '4'"), 10, "budget.trials", "valid integer"),
    (
        "negative-gpu",
        _add("resources: {cpu: 1, gpu: -0.5}\n"),
        11,
        "resources.gpu",
        "greater than or equal to 0",
    ),
    ("bad-pick", _add("promote: {steps: 10, pick: kneee}\n"), 11, "promote.pick", "knee, best"),
    (
        "bad-pick-metric",
        _add("promote: {steps: 10, pick: 'best:scor'}\n"),
        11,
        "promote.pick",
        "did you mean 'score'",
    ),
    ("missing-name", _edit("name: t\n", ""), 1, "name", "missing required key"),
    ("bad-name", _edit("name: t", "name: ../escape"), 1, "name", "letters, digits"),
    ("world-missing", _add("world: ./no/such/world.yaml\n"), 11, "world", "existing path"),
    (
        "section-not-mapping",
        _edit("budget: {trials: 4, concurrent: 1}", "budget: 4"),
        10,
        "budget",
        "expected a mapping",
    ),
    ("empty-file", "", 0, "", "empty file"),
    ("top-level-list", "- 1\n- 2\n", 1, "", "expected a mapping"),
    (
        "nan-bound",
        _edit("[0.1, 0.9], step: 0.1", "[.nan, 0.9]"),
        6,
        "search.t2i_edit_ratio.float[0]",
        "finite",
    ),
]
# Checks against the world (the tiny world: categories landscape/portrait/text, specialist text,
# teachers base + text, metrics of trainers.tinyworld.world.METRICS).
_NFE2_WEIGHTS = "  nfe: 2\n  teacher_weights: {base: [1.0, 0.5], text: [0.0, 0.5]}"
_BEFORE_WORLD_CASES = len(CASES)
CASES += [
    (
        "world-base-category-unknown",
        _edit("  nfe: 4", "  nfe: 4\n  category_mix: {landscape: 1, underwater: 1}"),
        5,
        "base.category_mix.underwater",
        "expected a category of world 'tiny' (landscape, portrait, text), found 'underwater'",
    ),
    (
        "world-simplex-category-unknown",
        _add("").replace("search:\n", "search:\n  category_mix: {simplex: [landscape, portrait, underwater]}\n"),
        6,
        "search.category_mix.simplex",
        "found 'underwater'",
    ),
    (
        "world-dotted-category-unknown",
        _add("").replace("search:\n", "search:\n  category_mix.potrait: {float: [0.0, 2.0]}\n"),
        6,
        "search.category_mix.potrait",
        "found 'potrait'; did you mean 'portrait'?",
    ),
    (
        "category-mix-choice-refused",  # a choice over whole mixes is not in the language: a simplex is
        _add("").replace("search:\n", "search:\n  category_mix: {choice: [landscape, underwater]}\n"),
        6,
        "search.category_mix",
        "expected a simplex",
    ),
    (
        "world-base-specialist-unknown",
        _edit("  nfe: 4", "  nfe: 4\n  specialist: txt"),
        5,
        "base.specialist",
        "expected a specialist of world 'tiny' (text), found 'txt'; did you mean 'text'?",
    ),
    (
        "world-specialist-choice-unknown",
        _add("").replace("search:\n", "search:\n  specialist: {choice: [text, portrait]}\n"),
        6,
        "search.specialist.choice",
        "expected a specialist of world 'tiny' (text), found 'portrait'",
    ),
    (
        "switch-gt-nfe-base",
        _edit("  nfe: 4", "  nfe: 4\n  teacher_switch_step: 6"),
        5,
        "base.teacher_switch_step",
        "expected <= nfe (4), found 6",
    ),
    (
        "switch-int-gt-base-nfe",
        _edit("  nfe: 4", "  nfe: 2").replace("search:\n", "search:\n  teacher_switch_step: {int: [0, 3]}\n"),
        6,
        "search.teacher_switch_step.int",
        "upper bound 3 gives an invalid recipe: teacher_switch_step: expected <= nfe (2), found 3",
    ),
    (
        "switch-base-gt-searched-nfe",
        _edit("  nfe: 4", "  teacher_switch_step: 4").replace("search:\n", "search:\n  nfe: {int: [2, 4]}\n"),
        6,
        "search.nfe.int",
        "lower bound 2 gives an invalid recipe: teacher_switch_step: expected <= nfe (2), found 4",
    ),
    (
        "world-objective-metric-unknown",
        _edit("metric: t2i_score", "metric: aesthetic"),
        8,
        "objectives[0].metric",
        "unknown metric 'aesthetic' of world 'tiny'",
    ),
    (
        "world-grouped-metric-category-unknown",
        _edit("metric: t2i_score", "metric: t2i_score/underwater"),
        8,
        "objectives[0].metric",
        "expected a category in t2i_score/<category> of world 'tiny' (landscape, portrait, text), found 'underwater'",
    ),
    (
        "world-grouped-metric-edit-type-unknown",
        _edit("metric: t2i_score", "metric: edit_score/recolour"),
        8,
        "objectives[0].metric",
        "expected an edit type in edit_score/<edit_type> of world 'tiny'",
    ),
    (
        "world-grouped-metric-not-grouped",
        _edit("metric: t2i_score", "metric: fd/text"),
        8,
        "objectives[0].metric",
        "unknown metric 'fd/text'",
    ),
    (
        "world-scheduler-metric-unknown",
        _add("scheduler: {name: asha, metric: scores}\n"),
        11,
        "scheduler.metric",
        "unknown metric 'scores' of world 'tiny'; did you mean 'score'?",
    ),
    (
        "world-pick-best-metric-unknown",
        _add("promote: {steps: 10, pick: 'best:t2i_score/underwater'}\n"),
        11,
        "promote.pick",
        "found 'underwater'",
    ),
    (
        "world-folder-not-loadable",  # worlds/real exists (CASE_FILES) but holds no world.yaml
        _add("world: worlds/real\n"),
        11,
        "world",
        "expected a world this version can load, found 'worlds/real': no world.yaml in that folder",
    ),
    (
        "world-folder-missing",
        _add("world: {name: models/qwen-image}\n"),
        11,
        "world",
        "expected 'tiny' or an existing path, found 'models/qwen-image'",
    ),
    (
        "teacher-weights-with-switch",
        _edit("  nfe: 4", _NFE2_WEIGHTS + "\n  teacher_switch_step: 1"),
        5,
        "base.teacher_weights",
        "expected either teacher_weights or teacher_switch_step, found both",
    ),
    (
        "teacher-weights-with-searched-switch",
        _edit("  nfe: 4", _NFE2_WEIGHTS).replace("search:\n", "search:\n  teacher_switch_step: {int: [0, 2]}\n"),
        7,
        "search.teacher_switch_step.int",
        "teacher_weights: expected either teacher_weights or teacher_switch_step, found both",
    ),
    (
        "teacher-weights-unknown-teacher",
        _edit("  nfe: 4", _NFE2_WEIGHTS.replace("text:", "txt:")),
        5,
        "base.teacher_weights.txt",
        "expected a teacher of world 'tiny' (base, text), found 'txt'; did you mean 'text'?",
    ),
]
# Files a case needs beside spec.yaml (created before the run; the run must add nothing).
CASE_FILES = {"world-folder-not-loadable": {"worlds/real/notes.txt": "not a world file\n"}}
WORLD_CASES = CASES[_BEFORE_WORLD_CASES:]

# "log-lo-zero" is easier to write by hand than to derive:
CASES = [c for c in CASES if c[0] != "log-lo-zero"] + [
    (
        "log-lo-zero",
        _add("").replace("search:\n", "search:\n  guidance_scale: {float: [0, 6], log: true}\n"),
        6,
        "search.guidance_scale.log",
        "lower bound > 0",
    ),
]


def _run_main(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_valid_base_spec_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("spec.yaml").write_text(VALID)
    code, out, err = _run_main(["spec.yaml", "--dry-run", "-n", "3"], capsys)
    assert (code, err) == (0, "")
    assert "t2i_edit_ratio" in out


@pytest.mark.parametrize("name, text, line, where, words", CASES, ids=[c[0] for c in CASES])
def test_malformed_spec_exits_2_with_location(name, text, line, where, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for rel, content in CASE_FILES.get(name, {}).items():
        Path(rel).parent.mkdir(parents=True, exist_ok=True)
        Path(rel).write_text(content)
    before = sorted(p.name for p in tmp_path.iterdir()) + ["spec.yaml"]
    Path("spec.yaml").write_text(text)
    code, out, err = _run_main(["spec.yaml", "--dry-run"], capsys)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    location = f"spec.yaml:{line}: " if line else "spec.yaml: "
    matching = [row for row in err.splitlines() if location in row and f": {where}" in row and words in row]
    assert matching, f"no line with {location!r}, {where!r} and {words!r} in:\n{err}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # nothing created


def test_cases_cover_enough_malformed_specs():
    assert len(CASES) >= 25
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len(WORLD_CASES) >= 12  # checks against the world


def test_world_problems_are_collected(tmp_path):
    """Several names the world does not have, all reported together (plus a plain structure error)."""
    text = _edit("  nfe: 4", "  nfe: 4\n  category_mix: {underwater: 1}\n  specialist: txt")
    text = text.replace("search:\n", "search:\n  category_mix.forest: {float: [0.0, 1.0]}\n")
    text = text.replace("metric: t2i_score", "metric: t2i_score/forest").replace("trials: 4", "trials: 0")
    path = tmp_path / "s.yaml"
    path.write_text(text + "scheduler: {name: asha, metric: purty}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    wheres = [(p.line, p.where) for p in info.value.problems]
    assert wheres == [
        (5, "base.category_mix.underwater"),
        (6, "base.specialist"),
        (8, "search.category_mix.forest"),
        (11, "objectives[0].metric"),
        (13, "budget.trials"),
        (14, "scheduler.metric"),
    ]


def test_unresolvable_world_is_reported_once(tmp_path):
    """A world that does not resolve is the one problem about names: nothing is checked against a guess."""
    path = tmp_path / "s.yaml"
    path.write_text(_edit("metric: t2i_score", "metric: t2i_score/forest") + "world: ./nowhere\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert [p.where for p in info.value.problems] == ["world"]


def test_all_problems_are_collected(tmp_path):
    """One broken spec, many problems, all reported together, in line order."""
    text = (
        _edit("  steps: 60", "  stepz: 60").replace("trials: 4", "trials: 0").replace("mode: max", "mode: up")
    )
    text = text.replace("search:\n", "search:\n  foo: {int: [1, 2]}\n") + "extra: 1\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    wheres = [p.where for p in info.value.problems]
    assert wheres == ["base.stepz", "search.foo", "objectives[0].mode", "budget.trials", "extra"]
    assert [p.line for p in info.value.problems] == [3, 6, 9, 11, 12]


def test_load_spec_resolves_defaults(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        VALID.replace("search:\n", "search:\n  category_mix: {simplex: [portrait, text]}\n")
        + "scheduler: {name: asha}\n"
    )
    spec = load_spec(path)
    assert spec.base["category_mix"] == {"portrait": 1.0, "text": 1.0}  # the simplex sets the whole mix
    assert (spec.scheduler.metric, spec.scheduler.mode) == ("t2i_score", "max")  # the single objective
    assert spec.directions == ["maximize"]
    assert spec.budget.max_failures == 2 and spec.tracking.uri is None and spec.promote.pick == "knee"
    assert spec.base_recipe.steps == 60


def test_simplex_and_explicit_base_mix_must_agree(tmp_path):
    path = tmp_path / "s.yaml"
    text = VALID.replace("  nfe: 4\n", "  nfe: 4\n  category_mix: {landscape: 1, text: 1}\n")
    path.write_text(text.replace("search:\n", "search:\n  category_mix: {simplex: [portrait, text]}\n"))
    with pytest.raises(SpecError, match=r"s.yaml:5: base.category_mix: expected the names of the simplex"):
        load_spec(path)


# -- property test: nothing but a SweepSpec or a clean SpecError -----------------------------------

BASE_DATA = yaml.safe_load(VALID) | {
    "scheduler": {"name": "asha", "grace_steps": 5},
    "promote": {"steps": 10, "pick": "knee"},
}
ANY_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 10)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        ["", "max", "tpe", "grid", "simplex", "0.5", "1e-4", "text", "!!python/name:os.system"]
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["float", "int", "choice", "simplex", "grid", "log", "step", "when", "x"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)


def _paths(data, prefix=()):
    """Every (path, container) inside nested dicts/lists, for mutation."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated_specs(draw) -> str:
    """A valid spec with a few keys dropped, added or retyped -- or random YAML-ish text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(alphabet="abc:{}[]-,#!&*|>'\"\n 01.", max_size=60))
    data = copy.deepcopy(BASE_DATA)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["drop", "retype", "add"]))
        if action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[
                draw(
                    st.sampled_from(
                        ["x", "steps", "nfe", "when", "log", "teacher_switch_step", "category_mix"]
                    )
                )
            ] = draw(ANY_VALUE)
        else:
            parent[path[-1]] = draw(ANY_VALUE)
    return yaml.safe_dump(data, sort_keys=False)


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated_specs())
def test_mutated_specs_load_or_fail_cleanly(text, tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "mutated.yaml"
    path.write_text(text)
    try:
        spec = load_spec(path)
    except SpecError as exc:
        assert exc.problems and all(p.render("f").startswith("f") for p in exc.problems)
        assert all(p.line is None or p.line >= 1 for p in exc.problems)
    else:
        assert isinstance(spec, SweepSpec)
        trial_recipe(spec.base, {})  # the resolved base is a valid Recipe
