"""CLI: run a recipe sweep from a spec.

    python -m orchestrator.sweep search_spaces/task_ratio.yaml --dry-run -n 8

A spec with problems prints every one of them (`file:line: key.path: expected ..., found ...`)
to stderr and exits with status 2, before anything is created (no run dir, no MLflow store).
`--dry-run` prints the resolved spec and the first N recipes the configured sampler proposes.
`--storage` overrides the spec's `storage:` (where Tune keeps the trials' checkpoints); the MLflow store
is `--tracking-uri`, else $MLFLOW_TRACKING_URI, else the spec's `tracking.uri`, else sqlite:///mlflow.db.
Both go into the spec the sweep runs with (the run folder's spec.yaml, which promote reads).
Exit status: 0 done; 1 the sweep could not start as asked, or no trial finished; 2 spec problems.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console

from orchestrator.cli_types import positive_int
from orchestrator.rundir import RunDir
from orchestrator.spec import SweepSpec, load_spec, storage_problem
from orchestrator.summary import no_result_cause, print_summary
from orchestrator.tracking.pending import pending_note
from orchestrator.tracking.store import tracking_uri
from orchestrator.tracking.view import view_url
from orchestrator.yamlio import SpecError

if TYPE_CHECKING:
    from orchestrator.sweep.engine import SweepOutcome

EXIT_OK, EXIT_SWEEP_ERROR, EXIT_SPEC_ERROR = 0, 1, 2


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
        "-n", type=positive_int, default=8, metavar="N", help="recipes to sample for --dry-run (default: 8)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", help="continue the sweep in runs/<name> (finished trials are kept)"
    )
    group.add_argument("--fresh", action="store_true", help="discard runs/<name> and start over")
    parser.add_argument(
        "--runs-dir", default="runs", help="where run folders go: <runs-dir>/<spec name> (default: runs)"
    )
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join, e.g. ray://head:10001 (default: RAY_ADDRESS or a local Ray)",
    )
    parser.add_argument(
        "--storage",
        type=_storage,
        metavar="PATH_OR_URI",
        help="where Ray Tune keeps the trials' checkpoints: a folder every node mounts, or a URI "
        "(file://, s3://, gs://); the run folder keeps the tables (default: the spec's storage, else the run folder)",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking store (default: MLFLOW_TRACKING_URI, else the spec's tracking.uri, else sqlite:///mlflow.db)",
    )
    return parser.parse_args(argv)


def _storage(text: str) -> str:
    """argparse type of --storage: the spec's check of `storage:` (argparse reports it and exits 2)."""
    problem = storage_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def as_run(spec: SweepSpec, args: argparse.Namespace) -> SweepSpec:
    """The spec with the command line's storage and tracking store (flag > environment > spec)."""
    tracking = spec.tracking.model_copy(update={"uri": tracking_uri(args.tracking_uri, spec.tracking.uri)})
    return spec.model_copy(update={"storage": args.storage or spec.storage, "tracking": tracking})


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point; always exits (0 ok, 1 sweep error, 2 spec problems) so tests can catch SystemExit."""
    args = parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        _print_spec_problems(exc)
        sys.exit(EXIT_SPEC_ERROR)
    spec = as_run(spec, args)
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns and elide values
        console = Console(width=160)
    # Imported once the spec is known good: Ray, torch and MLflow take seconds to import, which
    # --help and a spec with problems need not wait for.
    from orchestrator.sweep.dry_run import print_dry_run
    from orchestrator.sweep.engine import SweepError, run_sweep

    if args.dry_run:
        print_dry_run(spec, args.n, console)
        sys.exit(EXIT_OK)
    try:
        outcome = run_sweep(
            spec, resume=args.resume, fresh=args.fresh, address=args.address, runs_dir=args.runs_dir, console=console
        )
    except SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_SWEEP_ERROR)
    sys.exit(_report(outcome, spec, args, console))


def _print_spec_problems(exc: SpecError) -> None:
    noun = "problem" if len(exc.problems) == 1 else "problems"
    what = "world file" if exc.file.endswith("world.yaml") else "sweep spec"  # a world's problems name its file
    print(f"{exc.file}: {len(exc.problems)} {noun} in the {what}:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem.render(exc.file)}", file=sys.stderr)


def _report(outcome: SweepOutcome, spec: SweepSpec, args: argparse.Namespace, console: Console) -> int:
    """The summary, the MLflow writes still pending, the cause of a sweep without a result, where to
    compare the trials; returns the exit status."""
    print_summary(outcome.tables, spec, console)
    pending = pending_note(outcome.run_dir)
    if pending:  # the MLflow store stayed away: tables written, its writes wait in the run dir
        again = f"python -m orchestrator.sweep {args.spec} --resume" + "".join(
            f" {flag} {value}" for flag, value in _resume_flags(args))
        console.print(f"{pending}\n  deliver them once {outcome.tracking_uri} is back: {again}",
                      markup=False, highlight=False, soft_wrap=True)
    cause = no_result_cause(outcome.tables)
    if cause:  # every trial failed: the sweep has no answer, and says why in one line
        print(f"error: {cause} (details: {RunDir(outcome.run_dir).trials})", file=sys.stderr)
        return EXIT_SWEEP_ERROR
    console.print(f"{spec.name}: {len(outcome.tables.trials)} trials in {outcome.wall_s:.0f} s; tables in {outcome.run_dir}")
    if outcome.experiment:  # the spec's storage: Tune's experiment is not in the run folder
        console.print(f"checkpoints (the Tune experiment): {outcome.experiment}", markup=False, soft_wrap=True)
    if outcome.tracking_uri.startswith(("http://", "https://")):
        console.print(f"compare the trials: {view_url(outcome.tracking_uri, outcome.experiment_id)}")
    else:
        console.print(f"compare the trials: mlflow ui --backend-store-uri {outcome.tracking_uri} --host 127.0.0.1")
        console.print(f"  then open {view_url('http://127.0.0.1:5000', outcome.experiment_id)}")
    return EXIT_OK


def _resume_flags(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The flags a --resume of this sweep needs again (--runs-dir, --storage, --tracking-uri as given)."""
    given = [("--runs-dir", args.runs_dir if args.runs_dir != "runs" else None),
             ("--storage", args.storage), ("--tracking-uri", args.tracking_uri)]
    return [(flag, value) for flag, value in given if value]
