"""Point sweep specs at an MLflow server: rewrite their `tracking:` entry in place, comments kept.

    python docker/set_tracking_uri.py http://mlflow:5000 search_spaces/*.yaml

docker/Dockerfile runs this on the image's copy of search_spaces/ (build arg TRACKING_URI), so that
the README's sweep command, run inside a cluster, tracks to the cluster's MLflow server. A stopgap:
the sweep reads the store only from the spec's `tracking.uri` (null -> sqlite:///mlflow.db in the
working directory) and no flag or environment variable overrides it yet. Each rewritten file is read
back and must differ from the original in `tracking.uri` alone, or nothing is written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

_BLOCK = re.compile(r"^tracking:[ \t]*(#.*)?\n(?:[ \t]+.*\n?|[ \t]*\n)*", re.MULTILINE)  # tracking:\n  uri: ...
_FLOW = re.compile(r"^tracking:[ \t]*\{[^}\n]*\}[ \t]*(#.*)?$", re.MULTILINE)  # tracking: {uri: null}  # comment
_LINE = re.compile(r"^tracking:.*$", re.MULTILINE)  # tracking: null


def rewrite(text: str, uri: str) -> str:
    """The spec text with `tracking: {uri: <uri>}` in place of its tracking entry (appended if it has none)."""
    line = f"tracking: {{uri: {json.dumps(uri)}}}"  # a JSON string is a valid YAML flow scalar
    if _BLOCK.search(text):
        return _BLOCK.sub(lambda m: line + "\n", text, count=1)
    if _FLOW.search(text):
        return _FLOW.sub(lambda m: line + (f"  {m.group(1)}" if m.group(1) else ""), text, count=1)
    if _LINE.search(text):
        return _LINE.sub(lambda m: line, text, count=1)
    return text.rstrip("\n") + "\n" + line + "\n"


def check(before: str, after: str, uri: str, path: Path) -> None:
    """Raise ValueError unless `after` is `before` with tracking.uri set to `uri` and nothing else changed."""
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    if not isinstance(new, dict) or new.get("tracking") != {"uri": uri}:
        raise ValueError(f"{path}: tracking.uri not set (found tracking: {new.get('tracking')!r})")
    old.pop("tracking", None)
    new.pop("tracking")
    if old != new:
        raise ValueError(f"{path}: rewriting tracking: changed other keys; edit this spec by hand")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("uri", help="MLflow tracking URI, e.g. http://mlflow:5000")
    parser.add_argument("specs", nargs="+", type=Path, help="sweep spec files, rewritten in place")
    args = parser.parse_args(argv)
    updated = {}
    for path in args.specs:
        before = path.read_text()
        after = rewrite(before, args.uri)
        try:
            check(before, after, args.uri, path)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        updated[path] = after
    for path, text in updated.items():
        path.write_text(text)
        print(f"{path}: tracking.uri = {args.uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
