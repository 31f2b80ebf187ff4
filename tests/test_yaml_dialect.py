"""Tests of trainers/yaml_dialect.py: YAML 1.2 plain scalars on top of yaml.SafeLoader.

Run: .venv/bin/python -m pytest tests/test_yaml_dialect.py -q
"""

from __future__ import annotations

import math

import pytest
import yaml

from trainers.yaml_dialect import YamlLoader, load_yaml


def test_plain_scalars_read_as_yaml_1_2():
    """`1e-4` is a float and `no` a string (PyYAML's YAML 1.1 says str and False)."""
    data = load_yaml("a: 1e-4\nb: no\nc: on\nd: true\ne: 010\nf: 1:20\ng: 2024-01-01\nh: ~\ni: -3\nj: ''")
    assert data == {"a": 1e-4, "b": "no", "c": "on", "d": True, "e": 10.0, "f": "1:20", "g": "2024-01-01",
                    "h": None, "i": -3, "j": ""}
    assert type(data["i"]) is int and type(data["e"]) is float


def test_infinities_and_nan_are_floats_and_quoted_scalars_stay_strings():
    data = load_yaml("a: .inf\nb: -.Inf\nc: .nan\nd: '1e-4'\ne: \"true\"")
    assert data["a"] == math.inf and data["b"] == -math.inf and math.isnan(data["c"])
    assert (data["d"], data["e"]) == ("1e-4", "true")


def test_python_tags_are_refused_as_by_safe_loader():
    with pytest.raises(yaml.constructor.ConstructorError):
        load_yaml("!!python/object/apply:os.system ['true']")


def test_the_dialect_does_not_leak_into_pyyaml_safe_loader():
    """Replacing the resolvers on the subclass must leave yaml.SafeLoader's YAML 1.1 rules alone."""
    assert yaml.safe_load("a: no") == {"a": False}
    assert yaml.load("a: no", Loader=YamlLoader) == {"a": "no"}  # noqa: S506 -- a SafeLoader
