"""The project's one YAML dialect: ``YamlLoader`` (YAML 1.2 plain scalars) and ``load_yaml``.

Recipes (``Recipe.from_yaml``), the trainer CLI's ``--set`` values, sweep specs and world folders'
``world.yaml`` (the position-keeping reader, ``trainers.yaml_positions``, builds on ``YamlLoader``)
are all read with it, so `1e-4` means the same number everywhere.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class YamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader reading plain scalars as YAML 1.2 does: the project's one YAML dialect.

    PyYAML follows YAML 1.1, where `1e-4` is a *string* (a float needs a dot), `no`/`on` are
    booleans, `010` is octal 8, `1:20` is 80 and dates become datetimes -- so
    `lr_generator: 1e-4` would fail and `mixed_precision: no` would read as False. Here only
    null, true/false, decimal ints and floats (exponents allowed) are implicit; the rest is str.
    """


YamlLoader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in [
    ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    ("int", r"[-+]?(?:0|[1-9][0-9]*)", list("-+0123456789")),
    ("float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?", list("-+.0123456789")),
    ("float", r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", list("-+.")),
]:
    YamlLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(f"^(?:{_pattern})$"), _first)


def load_yaml(text: str) -> Any:
    """Plain data (dicts, lists, scalars) of a YAML document in the project's dialect."""
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 -- YamlLoader is a SafeLoader
