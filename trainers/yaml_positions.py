"""YAML files read with positions, and their problems as `file:line: key.path: expected ..., found ...`.

    root, data = read_yaml(path, MyFileError)   # node tree (with lines) + plain data; MyFileError if unsafe
    problems.append(Problem(("budget", "trials"), "expected >= 1, found 0"))
    line = line_of(root, problem.loc)           # the line of the key a problem is about
    raise MyFileError(path, problems)           # str(): one rendered line per problem

A file is read in two passes: `yaml.compose` keeps the node tree (with start lines), then the plain
data is built from it and validated. Every problem is recorded with its key path (`loc`), and the
line is looked up in the node tree at the end, so pydantic's `loc` tuples, cross-key checks and
YAML-level problems all render the same way. `show` and `did_you_mean` word the values and hints.

It lives in `trainers` because both user files share it: sweep specs (`orchestrator.yamlio`, whose
`SpecError` is a :class:`YamlFileError`) and world folders' `world.yaml` (``trainers.worlds``), and the
trainers may not import the orchestrator.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainers.yaml_dialect import YamlLoader

Loc = tuple[str | int, ...]

# The only tags a user file may carry: YAML's plain scalars and collections. Anything else
# (`!!python/object/apply:...`, `!!binary`, custom `!tags`) is refused before construction.
PLAIN_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("null", "bool", "int", "float", "str", "seq", "map")}

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 60, 60, 6, 6, 3


def show(value: Any) -> str:
    """A short repr of a user value for messages (bounded, even for huge aliased YAML)."""
    return _short.repr(value)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """'; did you mean X?' when a close option exists, else the list of allowed keys."""
    options = sorted(options)
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(options)}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where (key path, line) and what was expected/found."""

    loc: Loc
    message: str
    line: int | None = None

    @property
    def where(self) -> str:
        """The key path as written in messages: `search.t2i_edit_ratio.float`, `objectives[1].metric`."""
        text = ""
        for part in self.loc:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text

    def render(self, file: str) -> str:
        line = f"{file}:{self.line}" if self.line else file
        return f"{line}: {self.where}: {self.message}" if self.loc else f"{line}: {self.message}"


class YamlFileError(Exception):
    """A user YAML file with problems; holds every problem found, each with its file:line and key path."""

    def __init__(self, file: str | Path, problems: Sequence[Problem]):
        self.file = str(file)
        self.problems = list(problems)
        super().__init__("\n".join(p.render(self.file) for p in self.problems))

    def __reduce__(self):  # picklable with its two arguments (Ray ships exceptions between processes)
        return type(self), (self.file, self.problems)


# -- reading YAML with positions ---------------------------------------------------------------


def read_yaml(
    path: Path, error: type[YamlFileError] = YamlFileError, what: str = "a mapping of spec sections"
) -> tuple[yaml.Node, Any]:
    """Compose `path` into a node tree, refuse unsafe or ambiguous YAML, build the plain data.

    Problems are raised as `error` (the caller's kind of file); `what` words an empty file's problem.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(path, [Problem((), "no such file")]) from None
    except IsADirectoryError:
        raise error(path, [Problem((), "expected a YAML file, found a directory")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(path, [Problem((), f"cannot read the file: {exc}")]) from None
    loader = YamlLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise error(path, [Problem((), f"expected {what}, found an empty file")])
        problems = list(_check_nodes(loader, root, ()))
        if problems:
            raise error(path, problems)
        return root, loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        reason = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        line = mark.line + 1 if mark else None
        raise error(path, [Problem((), f"invalid YAML: {reason or exc}", line)]) from None
    finally:
        loader.dispose()


def _check_nodes(
    loader: YamlLoader, node: yaml.Node, loc: Loc, seen: set[int] | None = None
) -> Iterable[Problem]:
    """Problems a plain `yaml.safe_load` would hide or half-report: tags, non-string and duplicate keys."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: already checked (and never expanded, so no billion laughs)
        return
    seen.add(id(node))
    line = node.start_mark.line + 1
    if node.tag not in PLAIN_TAGS or _explicit_scalar_tag(loader, node):
        yield Problem(
            loc,
            f"expected plain YAML values, found the tag {node.tag.replace('tag:yaml.org,2002:', '!!')}",
            line,
        )
        return
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _check_nodes(loader, item, (*loc, i), seen)
    elif isinstance(node, yaml.MappingNode):
        first_line: dict[str, int] = {}
        for key, value in node.value:
            key_line = key.start_mark.line + 1
            if not (isinstance(key, yaml.ScalarNode) and key.tag.endswith(":str")):
                found = key.value if isinstance(key, yaml.ScalarNode) else "a collection"
                yield Problem(loc, f"expected string keys, found {found}", key_line)
                continue
            if key.value in first_line:
                yield Problem(
                    (*loc, key.value),
                    f"duplicate key (first given on line {first_line[key.value]})",
                    key_line,
                )
                continue
            first_line[key.value] = key_line
            yield from _check_nodes(loader, value, (*loc, key.value), seen)


def _explicit_scalar_tag(loader: YamlLoader, node: yaml.Node) -> bool:
    """True when a scalar's tag is not the one its text resolves to (`!!str 3`, `!!float x`)."""
    if not isinstance(node, yaml.ScalarNode):
        return False
    plain = node.style is None
    return node.tag != loader.resolve(yaml.ScalarNode, node.value, (plain, not plain))


def line_of(root: yaml.Node, loc: Loc) -> int:
    """The line of the deepest node along `loc` (a key's own line for the last key)."""
    node, line = root, root.start_mark.line + 1
    for depth, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if pair is None:
                break
            line = pair[0].start_mark.line + 1
            node = pair[1]
            if depth == len(loc) - 1:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line
