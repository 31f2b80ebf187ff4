"""CLI: run a recipe sweep from a spec.

    python -m orchestrator.sweep search_spaces/task_ratio.yaml --dry-run -n 8

A spec with problems prints every one of them (`file:line: key.path: expected ..., found ...`)
to stderr and exits with status 2, before anything is created (no run dir, no MLflow store).
`--dry-run` prints the resolved spec and the first N recipes the configured sampler proposes.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from rich import box
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from orchestrator import results, space, tracking, trial
from orchestrator.errors import SpecError, positive_int
from orchestrator.search import DedupOptunaSearch, PortableSampler, SearcherNotSavable
from orchestrator.spec import SweepSpec, load_spec, resolved_dict, spec_hash

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
    return parser.parse_args(argv)


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


# -- the engine ------------------------------------------------------------------------------------


class SweepError(Exception):
    """A sweep that cannot start as asked (existing run dir without --resume, nothing to resume, ...)."""


@dataclass
class SweepOutcome:
    run_dir: Path
    tables: results.Tables
    wall_s: float
    tracking_uri: str
    experiment_id: str = ""


def run_sweep(
    spec: SweepSpec,
    *,
    resume: bool = False,
    fresh: bool = False,
    address: str | None = None,
    runs_dir: str | Path = "runs",
    console: Console | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep on Ray Tune; write the tables; return them with the wall time."""
    console = console or Console()
    start = time.perf_counter()
    run_dir = Path(runs_dir).resolve() / spec.name
    sweep_id = _prepare_run_dir(run_dir, spec, resume=resume, fresh=fresh, console=console)
    uri = spec.tracking.uri or tracking.DEFAULT_URI
    info = tracking.SweepInfo(
        name=spec.name,
        sweep_id=sweep_id,
        uri=uri,
        spec_yaml=yaml.safe_dump(resolved_dict(spec), sort_keys=False),
        tags={"spec_hash": spec_hash(spec), "mlflow.source.git.commit": _git_commit(), "run_dir": str(run_dir)},
        view=tracking.comparison_view(sweep_id, list(spec.search), [(o.metric, o.mode) for o in spec.objectives]),
    )
    # Snapshot the experiment state every second (Ray's default: every 10 s or more), so that a
    # trial finished before a crash is known finished on --resume instead of re-run from a checkpoint.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # that is on purpose
    # Ray's own console output (an experiment box, a TensorBoard hint) is off: ProgressLines print instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A new sqlite store takes seconds to create (schema migrations): done while Ray starts.
    # Its errors are left to the tracker, which reports them as the sweep starts.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(tracking.open_store, uri)
        owns_ray = _start_ray(address, run_dir)
    try:
        trainable = trial.make_trainable(spec)
        # A driver killed after creating the run dir but before Tune's first state snapshot left
        # nothing to restore: that sweep starts from the beginning, under its own sweep id.
        if resume and tune.Tuner.can_restore(str(run_dir)):
            tuner = tune.Tuner.restore(str(run_dir), trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = build_tuner(spec, trainable, run_dir, [tracking.MlflowTracker(info, spec.base), ProgressLines(spec)])
        tuner.fit()
    finally:
        if owns_ray:
            ray.shutdown()
    tracker = tracking.MlflowTracker(info, spec.base)  # a fresh client: Ray owns the callback's copy
    tables = results.collect(run_dir, spec, tracker.all_run_ids())
    paths = results.write(run_dir, tables)
    tracker.log_outputs(paths)
    return SweepOutcome(run_dir, tables, time.perf_counter() - start, uri, tracker.experiment_id)


def build_tuner(spec: SweepSpec, trainable: Any, run_dir: Path, callbacks: list[tune.Callback]) -> tune.Tuner:
    """Tuner(Optuna over the define-by-run space, repeats skipped, ASHA?, run dir, failure and checkpoint policy)."""
    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    single = len(metrics) == 1
    searcher = DedupOptunaSearch(
        space=space.build_space(spec.search),
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        sampler=PortableSampler(functools.partial(space.make_sampler, spec.sampler, spec.search)),
    )
    try:  # Tune saves the searcher with the experiment: a sampler that cannot be saved is said so now
        searcher.check_savable(spec.sampler.name)
    except SearcherNotSavable as exc:
        raise SweepError(str(exc)) from None
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(spec),
            num_samples=spec.budget.trials,
            max_concurrent_trials=spec.budget.concurrent,
            time_budget_s=spec.budget.time_limit_s,
            reuse_actors=True,  # per-trial start-up ≈ 0.8 s instead of 2.2 s (DESIGN §10)
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(run_dir.parent),
            failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
            verbose=0,  # our own progress lines instead of Ray's status tables
            log_to_file=True,  # trial stdout/stderr into the trial folders
        ),
    )


def trial_dirname(trial: Any) -> str:
    """Trial folders named by trial id only (Ray's default packs every param into the name)."""
    return f"trial_{trial.trial_id}"


def _scheduler(spec: SweepSpec) -> Any:
    """ASHA on the scalar scheduler metric, milestones in generator steps; FIFO otherwise."""
    cfg = spec.scheduler
    if cfg is None or cfg.name == "fifo":
        return None
    return ASHAScheduler(
        time_attr="step",
        metric=cfg.metric,
        mode=cfg.mode,
        max_t=cfg.max_steps or spec.base_recipe.steps,
        grace_period=cfg.grace_steps,
        reduction_factor=cfg.reduction_factor,
    )


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _prepare_run_dir(run_dir: Path, spec: SweepSpec, *, resume: bool, fresh: bool, console: Console) -> str:
    """Check the run dir against the flags; archive it for --fresh; return the sweep id (new or stored)."""
    marker = run_dir / "sweep.json"
    if resume:
        if not marker.is_file():
            raise SweepError(f"{run_dir}: no sweep to resume; run without --resume to start it")
        stored = json.loads(marker.read_text())
        if stored["spec_hash"] != spec_hash(spec):
            raise SweepError(
                f"{run_dir}: the spec changed since this sweep started; "
                "resume with the original spec, or start over with --fresh"
            )
        return stored["sweep_id"]
    if run_dir.exists():
        if not fresh:
            raise SweepError(
                f"{run_dir} exists: use --resume to continue that sweep, or --fresh to archive it and start over"
            )
        archive = run_dir.with_name(f"{run_dir.name}.archived-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(archive)
        console.print(f"archived the previous sweep to {archive}")
    sweep_id = uuid.uuid4().hex
    # Made whole beside its place, then moved there: a kill never leaves a half-made run dir.
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.parent.glob(f".{run_dir.name}.new-*"):  # left by a start killed right here
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.new-", dir=run_dir.parent))
    # The resolved spec beside the results: `orchestrator.promote` and the notebook read it from here.
    (staging / "spec.yaml").write_text(yaml.safe_dump(resolved_dict(spec), sort_keys=False))
    (staging / marker.name).write_text(json.dumps({"sweep_id": sweep_id, "spec_hash": spec_hash(spec), "name": spec.name}))
    staging.rename(run_dir)
    return sweep_id


def _start_ray(address: str | None, run_dir: Path) -> bool:
    """Join `address` / RAY_ADDRESS, or start a local Ray on 127.0.0.1 without dashboard.

    Ray's own log lines go to runs/<name>/driver.log, not the console. Returns whether we started it
    (and so must shut it down); an already initialised Ray (tests, notebooks) is used as is.
    """
    _log_ray_to(run_dir / "driver.log")
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    common = {"log_to_driver": False, "logging_level": logging.WARNING, "configure_logging": False}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **common)
    return True


def _log_ray_to(path: Path) -> None:
    """Driver-side log lines of Ray, MLflow and Optuna go to `path` (the console shows our lines only)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "mlflow", "optuna", "alembic"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    optuna.logging.disable_default_handler()


class ProgressLines(tune.Callback):
    """One short line per trial event (start, report, end) instead of Ray's status tables."""

    def __init__(self, spec: SweepSpec):
        self.metrics = list(dict.fromkeys([o.metric for o in spec.objectives] + ["score"]))
        self.total = spec.budget.trials
        self._console: Console | None = None
        self._started: set[str] | None = None  # ids of the trials started so far

    def __getstate__(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "total": self.total, "_console": None, "_started": None}

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = Console(highlight=False, soft_wrap=True)
        return self._console

    def _line(self, trial: Any, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} trial {trial.trial_id}  {text}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        params = ", ".join(f"{k}={_cell(v)}" for k, v in space.recipe_params(trial.config).items())
        # Counted here, not from the trials' statuses: when Tune updates those relative to its
        # callbacks is its own business. A resumed sweep counts the trials that ended before.
        if self._started is None:
            self._started = {t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")}
        self._started.add(trial.trial_id)
        self._line(trial, f"started ({len(self._started)}/{self.total})  {params}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        shown = "  ".join(f"{m}={result[m]:.3f}" for m in self.metrics if m in result)
        self._line(trial, f"step {int(result.get('step', 0)):>5}  {shown}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, tracking.trial_outcome(trial, completed=True))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, f"retrying: {tracking.trial_error(trial)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, f"FAILED: {tracking.trial_error(trial)}")


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
    results.print_summary(outcome.tables, spec, console)
    pending = tracking.pending_note(outcome.run_dir)
    if pending:  # the MLflow store stayed away: tables written, its writes wait in the run dir
        again = f"python -m orchestrator.sweep {args.spec} --resume" + (
            f" --runs-dir {args.runs_dir}" if args.runs_dir != "runs" else "")
        console.print(f"{pending}\n  deliver them once {outcome.tracking_uri} is back: {again}",
                      markup=False, highlight=False, soft_wrap=True)
    cause = results.no_result_cause(outcome.tables)
    if cause:  # every trial failed: the sweep has no answer, and says why in one line
        print(f"error: {cause} (details: {outcome.run_dir / 'trials.parquet'})", file=sys.stderr)
        sys.exit(EXIT_SWEEP_ERROR)
    console.print(f"{spec.name}: {len(outcome.tables.trials)} trials in {outcome.wall_s:.0f} s; tables in {outcome.run_dir}")
    if outcome.tracking_uri.startswith(("http://", "https://")):
        console.print(f"compare the trials: {tracking.view_url(outcome.tracking_uri, outcome.experiment_id)}")
    else:
        console.print(f"compare the trials: mlflow ui --backend-store-uri {outcome.tracking_uri} --host 127.0.0.1")
        console.print(f"  then open {tracking.view_url('http://127.0.0.1:5000', outcome.experiment_id)}")
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
