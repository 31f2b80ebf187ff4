"""CLI: run a recipe sweep from a spec.

    python -m orchestrator.sweep search_spaces/task_ratio.yaml --dry-run -n 8

A spec with problems prints every one of them (`file:line: key.path: expected ..., found ...`)
to stderr and exits with status 2, before anything is created (no run dir, no MLflow store).
`--dry-run` prints the resolved spec and the first N recipes the configured sampler proposes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import optuna
import yaml
from rich import box
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from orchestrator import space
from orchestrator.errors import SpecError
from orchestrator.spec import SweepSpec, load_spec

EXIT_OK, EXIT_SPEC_ERROR = 0, 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.sweep", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("spec", help="sweep spec (YAML), e.g. search_spaces/task_ratio.yaml")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, print the resolved spec and N sampled recipes; train nothing",
    )
    parser.add_argument(
        "-n", type=_positive, default=8, metavar="N", help="recipes to sample for --dry-run (default: 8)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", help="continue the sweep in runs/<name> (finished trials are kept)"
    )
    group.add_argument("--fresh", action="store_true", help="discard runs/<name> and start over")
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join, e.g. ray://head:10001 (default: RAY_ADDRESS or a local Ray)",
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text}")
    return value


def sample_params(spec: SweepSpec, n: int) -> list[dict[str, Any]]:
    """The first n params the configured sampler proposes, from an in-memory study.

    Nothing is told to the study, so every sampler falls back to its start-up (independent)
    sampling -- exactly what the first trials of a real sweep get.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=None, directions=spec.directions, sampler=space.make_sampler(spec.sampler, spec.search)
    )
    sample = space.build_space(spec.search)
    return [sample(study.ask()) for _ in range(n)]


def resolved_dict(spec: SweepSpec) -> dict[str, Any]:
    """The spec with every default filled in (search entries show only what was given)."""
    data = spec.model_dump(mode="json", by_alias=True)
    data["search"] = {
        key: entry.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for key, entry in spec.search.items()
    }
    return data


def print_dry_run(spec: SweepSpec, n: int, console: Console) -> None:
    """The resolved spec as YAML, then a table of the first n sampled recipes (swept params only;
    simplex weights normalised, raw draws hidden)."""
    resolved = yaml.safe_dump(resolved_dict(spec), sort_keys=False, default_flow_style=None, width=100)
    console.print(Syntax(resolved, "yaml", background_color="default"))
    rows = [space.recipe_params(params) for params in sample_params(spec, n)]
    # One row per swept param, one column per recipe: full param names stay readable at 80 columns.
    console.print(f"First {n} recipes from the {spec.sampler.name} sampler (seed {spec.sampler.seed}):")
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("param", no_wrap=True)
    for i in range(n):
        table.add_column(f"#{i}", justify="right", no_wrap=True)
    for key in dict.fromkeys(key for row in rows for key in row):
        # '-': a conditional param that was not sampled (its base value stands)
        table.add_row(key, *(_cell(row[key]) if key in row else "-" for row in rows))
    console.print(table)


def _cell(value: Any) -> str:
    """Table cell: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; always exits (0 ok, 2 spec problems) so tests can catch SystemExit."""
    args = parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        noun = "problem" if len(exc.problems) == 1 else "problems"
        print(f"{exc.file}: {len(exc.problems)} {noun} in the sweep spec:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem.render(exc.file)}", file=sys.stderr)
        sys.exit(EXIT_SPEC_ERROR)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns and elide values
        console = Console(width=160)
    print_dry_run(spec, args.n, console)
    if not args.dry_run:
        console.print("(the sweep engine is not built yet: the spec is valid, showing the dry run)")
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
