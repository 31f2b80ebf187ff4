"""argparse types shared by the command lines (`python -m orchestrator.sweep`, `... .promote`).

    parser.add_argument("-n", type=positive_int, default=8)

A type raises `argparse.ArgumentTypeError`; argparse prints its message with the flag and exits 2.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """argparse type for counts on the command line (`-n`, `--threads`): argparse reports the message."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text}")
    return value
