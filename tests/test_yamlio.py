"""orchestrator.yamlio: YAML read with positions, unsafe YAML refused, problems rendered as file:line: key.path.

Run: .venv/bin/python -m pytest tests/test_yamlio.py -q
"""

from __future__ import annotations

import pytest

from orchestrator.yamlio import Problem, SpecError, did_you_mean, expected_name, line_of, read_yaml, show


def _read(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return read_yaml(path)


def _problems(tmp_path, text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(SpecError) as info:
        _read(tmp_path, text)
    return [(p.line, p.where, p.message) for p in info.value.problems]


def test_plain_yaml_reads_in_the_project_dialect(tmp_path):
    root, data = _read(tmp_path, "a: 1e-4\nb: no\nc: [1, 2.5, null, true]\n")
    assert data == {"a": 1e-4, "b": "no", "c": [1, 2.5, None, True]}  # YAML 1.2 scalars: 1e-4 a float, no a str
    assert root.start_mark.line == 0


def test_tags_are_refused_before_anything_is_built(tmp_path):
    text = "name: !!python/object/apply:os.system [echo hi]\nsteps: !secret 60\nnfe: !!str 4\n"
    assert _problems(tmp_path, text) == [
        (1, "name", "expected plain YAML values, found the tag !!python/object/apply:os.system"),
        (2, "steps", "expected plain YAML values, found the tag !secret"),
        (3, "nfe", "expected plain YAML values, found the tag !!str"),
    ]


def test_duplicate_and_non_string_keys_are_reported_with_their_lines(tmp_path):
    text = "base:\n  nfe: 4\n  nfe: 2\n  1: x\nname: t\nname: u\n"
    assert _problems(tmp_path, text) == [
        (3, "base.nfe", "duplicate key (first given on line 2)"),
        (4, "base", "expected string keys, found 1"),
        (6, "name", "duplicate key (first given on line 5)"),
    ]


def test_aliases_are_checked_once_and_not_expanded(tmp_path):
    """A billion-laughs document: each alias is one node, checked once; the data shares it."""
    text = "a: &a [1, 2]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n"
    _, data = _read(tmp_path, text)
    assert data["c"][0][0] is data["a"]


@pytest.mark.parametrize(
    "text, line, words",
    [("a: [1, 2\n", 2, "invalid YAML: while parsing"), ("a:\n\tb: 1\n", 2, "invalid YAML"), ("", None, "empty file")],
)
def test_broken_or_empty_files_are_one_problem(tmp_path, text, line, words):
    [(found_line, where, message)] = _problems(tmp_path, text)
    assert (found_line, where) == (line, "") and words in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        read_yaml(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="expected a YAML file, found a directory"):
        read_yaml(tmp_path)


def test_line_of_finds_the_deepest_key_along_a_path(tmp_path):
    root, _ = _read(tmp_path, "name: t\nsearch:\n  ratio:\n    float: [0.1, 0.9]\nobjectives:\n  - {metric: x}\n")
    assert line_of(root, ("search", "ratio", "float")) == 4
    assert line_of(root, ("search", "ratio", "float", 1)) == 4  # inside a flow list: its line
    assert line_of(root, ("objectives", 0, "metric")) == 6
    assert line_of(root, ("search", "absent")) == 3  # where the deepest mapping found starts
    assert line_of(root, ()) == 1


def test_problems_render_as_file_line_key_path():
    problem = Problem(("objectives", 1, "metric"), "expected distinct metrics", 7)
    assert problem.where == "objectives[1].metric"
    assert problem.render("s.yaml") == "s.yaml:7: objectives[1].metric: expected distinct metrics"
    assert Problem((), "no such file").render("s.yaml") == "s.yaml: no such file"
    error = SpecError("s.yaml", [problem, Problem(("name",), "missing required key", 1)])
    assert str(error).splitlines() == [
        "s.yaml:7: objectives[1].metric: expected distinct metrics",
        "s.yaml:1: name: missing required key",
    ]


def test_message_helpers():
    assert did_you_mean("stepz", ["steps", "nfe"]) == "; did you mean 'steps'?"
    assert did_you_mean("zzz", ["steps", "nfe"]) == "; expected one of nfe, steps"
    assert expected_name("edit type", "recolour", ("mirror", "recolor"), "tiny") == (
        "expected an edit type of world 'tiny' (mirror, recolor), found 'recolour'; did you mean 'recolor'?"
    )
    assert expected_name("teacher", "x", (), "tiny") == "expected a teacher of world 'tiny' (none), found 'x'"
    assert len(show("x" * 10_000)) < 70 and len(show(list(range(10_000)))) < 70  # bounded for huge values
