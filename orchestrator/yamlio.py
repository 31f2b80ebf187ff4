"""Spec files read with positions, and their problems as `file:line: key.path: expected ..., found ...`.

    root, data = read_yaml(path)              # node tree (with lines) + plain data; SpecError if unsafe
    problems.append(Problem(("budget", "trials"), "expected >= 1, found 0"))
    line = line_of(root, problem.loc)         # the line of the key a problem is about
    raise SpecError(path, problems)           # str(): one rendered line per problem

The position-keeping reader itself is `trainers.yaml_positions` (world folders' `world.yaml` is read
with it too, and the trainers may not import the orchestrator); this module is its spec face:
`SpecError`, `read_yaml` raising it, and `expected_name` for names checked against a world.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from trainers.yaml_positions import (
    PLAIN_TAGS,
    Loc,
    Problem,
    YamlFileError,
    _check_nodes,
    _explicit_scalar_tag,
    did_you_mean,
    line_of,
    show,
)
from trainers.yaml_positions import read_yaml as _read_yaml

__all__ = [
    "PLAIN_TAGS", "Loc", "Problem", "SpecError", "YamlFileError", "did_you_mean", "expected_name", "line_of",
    "read_yaml", "show", "_check_nodes", "_explicit_scalar_tag",
]


class SpecError(YamlFileError):
    """A spec that cannot run; holds every problem found, each with its file:line and key path.

    `file` is the file the problems are in: the spec, or the `world.yaml` its `world:` names.
    """


def read_yaml(path: Path) -> tuple[yaml.Node, Any]:
    """Compose the spec at `path` into a node tree, refuse unsafe or ambiguous YAML, build the plain data."""
    return _read_yaml(path, SpecError, "a mapping of spec sections")


def expected_name(what: str, found: str, allowed: Sequence[str], world: str) -> str:
    """`expected a <what> of world 'tiny' (a, b, c), found 'x'; did you mean 'y'?` (the hint when one is close)."""
    close = difflib.get_close_matches(found, list(allowed), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    article = "an" if what[:1] in "aeiou" else "a"
    names = ", ".join(allowed) or "none"
    return f"expected {article} {what} of world {world!r} ({names}), found {found!r}{hint}"
