"""orchestrator.cli_types: argparse types of the command lines.

Run: .venv/bin/python -m pytest tests/test_cli_types.py -q
"""

from __future__ import annotations

import argparse

import pytest

from orchestrator.cli_types import positive_int


def test_positive_int_takes_counts_from_one_up(capsys):
    parser = argparse.ArgumentParser(prog="p")
    parser.add_argument("-n", type=positive_int)
    assert parser.parse_args(["-n", "3"]).n == 3
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["-n", "0"])
    assert info.value.code == 2
    assert "argument -n: expected an integer >= 1, found 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["-n", "two"])  # not an int: argparse's own message
    assert "invalid positive_int value: 'two'" in capsys.readouterr().err
