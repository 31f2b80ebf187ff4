"""The sweep engine: a spec in, its run folder, Ray Tune trials, tables and MLflow runs out.

    outcome = run_sweep(spec, resume=False, fresh=False, runs_dir="runs")
    outcome.tables.trials                        # also in the run folder: RunDir(outcome.run_dir).trials

Optuna proposes recipes over the define-by-run space (repeats skipped), ASHA stops weak trials
early when the spec asks for it, the MLflow tracker and the progress lines are Tune callbacks of the
driver. `--resume` restores the Tune experiment from the run folder (Optuna's study included);
`--fresh` archives the old folder first. Run-folder names come from orchestrator.rundir. With
`spec.storage`, the Tune experiment (trial checkpoints) lives there, in `<storage>/<name>/<sweep id>`,
and the run folder keeps the tables and sweep.json, which records the storage for --resume and promote.

With `confirm: {top, seeds}` a second Tune experiment follows the search, in runs/<name>/confirm:
the top trials re-run with new seeds (orchestrator.confirm), tracked as children of the same MLflow
parent with `stage=confirm`. Its plan is written once the search ends (confirm_plan.json), so a
resumed sweep skips the finished search and runs the same confirmation runs, none twice.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from rich.console import Console

from orchestrator import confirm, reference, results, trial
from orchestrator.rundir import RunDir, storage_root
from orchestrator.search.dedup import DedupOptunaSearch
from orchestrator.search.planned import PlannedSearch
from orchestrator.search.samplers import PortableSampler, SearcherNotSavable, check_savable, make_sampler
from orchestrator.search.space import define_by_run
from orchestrator.spec import SweepSpec, resolved_dict, spec_hash
from orchestrator.sweep.progress import ProgressLines
from orchestrator.sweep.ray_start import start_ray
from orchestrator.tracking.callback import MlflowTracker, SweepInfo
from orchestrator.tracking.store import DEFAULT_URI, open_store
from orchestrator.tracking.view import comparison_view
from trainers.world import load_world


class SweepError(Exception):
    """A sweep that cannot start as asked (existing run dir without --resume, nothing to resume, ...)."""


@dataclass
class SweepOutcome:
    run_dir: Path
    tables: results.Tables
    wall_s: float
    tracking_uri: str
    experiment_id: str = ""
    experiment: str | None = None  # the Tune experiment, when on a storage outside the run folder


def _prepare_world(spec: SweepSpec, console: Console) -> None:
    """What every trial only reads is computed once, here (a real world's text-condition cache): a trial
    never loads a text encoder."""
    stats = load_world(spec.world.name, **spec.world.options).prepare(progress=True)
    if stats.get("encoded"):
        console.print(f"world: encoded {stats['encoded']} texts into the condition cache "
                      f"({stats.get('cached', 0)} were cached)")


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
    run = RunDir.of(runs_dir, spec.name)
    sweep_id = prepare_run_dir(run, spec, resume=resume, fresh=fresh, console=console)
    run = RunDir.open(run.path)  # the Tune experiment where sweep.json says: this folder or the storage
    info = sweep_info(spec, sweep_id, run)
    _prepare_world(spec, console)
    _tune_settings()
    # A new sqlite store takes seconds to create (schema migrations): done while Ray starts.
    # Its errors are left to the tracker, which reports them as the sweep starts.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(open_store, info.uri)
        owns_ray = start_ray(address, run.driver_log)
    try:
        if not (resume and run.confirm_plan.is_file()):  # else the search ended before the kill
            _fit(spec, run, info, resume)
        if spec.confirm is not None:
            _confirm(spec, run, info, resume, console)
    finally:
        if owns_ray:
            ray.shutdown()
    tracker = MlflowTracker(info, spec.base)  # a fresh client: Ray owns the callback's copy
    run_ids = tracker.all_run_ids()
    tables = results.collect(run.experiment, spec, run_ids)
    if spec.confirm is not None and tune.Tuner.can_restore(run.confirm.experiment):
        tables.confirm = results.collect(run.confirm.experiment, spec, run_ids).trials
    _reference(run, spec, console)
    paths = results.write(run.path, tables)
    tracker.log_outputs(paths)
    return SweepOutcome(run.path, tables, time.perf_counter() - start, info.uri, tracker.experiment_id,
                        run.experiment_at)


def sweep_info(spec: SweepSpec, sweep_id: str, run: RunDir) -> SweepInfo:
    """What the MLflow tracker needs of the sweep: names, store, resolved spec, provenance tags, view."""
    return SweepInfo(
        name=spec.name,
        sweep_id=sweep_id,
        uri=spec.tracking.uri or DEFAULT_URI,
        spec_yaml=yaml.safe_dump(resolved_dict(spec), sort_keys=False),
        tags={"spec_hash": spec_hash(spec), "mlflow.source.git.commit": _git_commit(), "run_dir": str(run.path)},
        view=comparison_view(sweep_id, list(spec.search), [(o.metric, o.mode) for o in spec.objectives]),
    )


def _tune_settings() -> None:
    """Tune's settings that only its environment sets (a user's own value wins)."""
    # Snapshot the experiment state every second (Ray's default: every 10 s or more), so that a
    # trial finished before a crash is known finished on --resume instead of re-run from a checkpoint.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # that is on purpose
    # Ray's own console output (an experiment box, a TensorBoard hint) is off: ProgressLines print instead.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _fit(spec: SweepSpec, run: RunDir, info: SweepInfo, resume: bool) -> None:
    """The Tune experiment to its end: restored from the run folder on --resume, else a new one."""
    trainable = _trainable(spec)
    # A driver killed after creating the run dir but before Tune's first state snapshot left
    # nothing to restore: that sweep starts from the beginning, under its own sweep id.
    if resume and tune.Tuner.can_restore(run.experiment):
        tuner = tune.Tuner.restore(run.experiment, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = build_tuner(spec, trainable, run, [MlflowTracker(info, spec.base), ProgressLines(spec)])
    tuner.fit()


def _reference(run: RunDir, spec: SweepSpec, console: Console) -> None:
    """reference.json, the hypervolume reference point (the spec's, else the teacher at the student's NFE).

    Computed once per run folder; a failure to score the teacher costs the figures their fixed
    reference, never the sweep its tables.
    """
    try:
        reference.ensure_reference(run, spec)
    except Exception as exc:  # noqa: BLE001 - the tables matter more than the reference
        console.print(f"no hypervolume reference ({type(exc).__name__}: {exc}); the figures use the worst trial")


def _confirm(spec: SweepSpec, run: RunDir, info: SweepInfo, resume: bool, console: Console) -> None:
    """The confirmation stage to its end: restored on --resume, else its planned runs started."""
    configs = confirm_plan(spec, run)
    if not configs:
        console.print("confirmation: no finished trial to confirm")
        return
    trainable = _trainable(spec)
    folder = run.confirm.experiment
    if resume and tune.Tuner.can_restore(folder):
        tuner = tune.Tuner.restore(folder, trainable, resume_unfinished=True, resume_errored=True)
    else:
        console.print(f"confirmation: {len(configs)} runs ({spec.confirm.top} trials x {spec.confirm.seeds} new seeds)")
        callbacks = [MlflowTracker(info, spec.base, stage="confirm"), ProgressLines(spec, total=len(configs))]
        tuner = build_confirm_tuner(spec, trainable, run, configs, callbacks)
    tuner.fit()


def confirm_plan(spec: SweepSpec, run: RunDir) -> list[dict[str, Any]]:
    """The confirmation runs' Tune configs: read from confirm_plan.json, else made from the finished
    search and written there (atomically) before any of them starts."""
    if run.confirm_plan.is_file():
        return json.loads(run.confirm_plan.read_text())["configs"]
    from ray.tune import ExperimentAnalysis

    configs = {t.trial_id: t.config for t in ExperimentAnalysis(run.experiment).trials}
    searched = results.collect(run.experiment, spec).trials
    planned = [r.config for r in confirm.plan(searched, configs, spec)]
    tmp = run.confirm_plan.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"top": spec.confirm.top, "seeds": spec.confirm.seeds, "configs": planned}, indent=1))
    tmp.replace(run.confirm_plan)
    return planned


def build_confirm_tuner(
    spec: SweepSpec, trainable: Any, run: RunDir, configs: list[dict[str, Any]], callbacks: list[tune.Callback]
) -> tune.Tuner:
    """Tuner running exactly `configs` (FIFO, no time budget) in runs/<name>/confirm."""
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=PlannedSearch(configs),
            num_samples=len(configs),
            max_concurrent_trials=spec.budget.concurrent,
            reuse_actors=_reuse_actors(spec),
            trial_dirname_creator=trial_dirname,
        ),
        run_config=_run_config(spec, run.confirm, callbacks),
    )


def build_tuner(spec: SweepSpec, trainable: Any, run: RunDir, callbacks: list[tune.Callback]) -> tune.Tuner:
    """Tuner(Optuna over the define-by-run space, repeats skipped, ASHA?, run dir, failure and checkpoint policy)."""
    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    single = len(metrics) == 1
    searcher = DedupOptunaSearch(
        space=define_by_run(spec.search),
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        sampler=PortableSampler(functools.partial(make_sampler, spec.sampler, spec.search)),
    )
    try:  # Tune saves the searcher with the experiment: a sampler that cannot be saved is said so now
        check_savable(searcher, spec.sampler.name)
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
            reuse_actors=_reuse_actors(spec),
            trial_dirname_creator=trial_dirname,
        ),
        run_config=_run_config(spec, run, callbacks),
    )


def _run_config(spec: SweepSpec, run: RunDir, callbacks: list[tune.Callback]) -> tune.RunConfig:
    """The experiment of `run` (runs/<name>, or <storage>/<name>/<sweep id>; or its confirm/), with the
    spec's failure policy. A URI storage goes to Tune as it is: Tune resolves it with pyarrow."""
    storage_path, name = run.tune_location
    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        failure_config=tune.FailureConfig(max_failures=spec.budget.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks,
        verbose=0,  # our own progress lines instead of Ray's status tables
        log_to_file=True,  # trial stdout/stderr into the trial folders
    )


def _trainable(spec: SweepSpec) -> Any:
    """A one-process trial, or (`resources.workers > 1`) a driver of that many Ray Train workers."""
    if spec.resources.workers > 1:
        from orchestrator.workers import make_worker_trainable  # imports Ray Train: only when used

        return make_worker_trainable(spec)
    return trial.make_trainable(spec)


def _reuse_actors(spec: SweepSpec) -> bool:
    """One-process trials reuse their actor (per-trial start-up ≈ 0.8 s instead of 2.2 s, DESIGN §10).

    A multi-worker trial's actor is only its driver; a stopped one must go, since ending it is what
    ends the Train run it started (its controller and workers share its fate).
    """
    return spec.resources.workers == 1


def trial_dirname(trial: Any) -> str:
    """Tune's name for a trial's folder: RunDir's."""
    return RunDir.trial_dirname(trial.trial_id)


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


def prepare_run_dir(run: RunDir, spec: SweepSpec, *, resume: bool, fresh: bool, console: Console | None) -> str:
    """Check the run dir against the flags; archive it for --fresh; return the sweep id (new or stored)."""
    if resume:
        if not run.marker.is_file():
            raise SweepError(f"{run.path}: no sweep to resume; run without --resume to start it")
        stored = run.record()
        if stored["spec_hash"] != spec_hash(spec):
            raise SweepError(
                f"{run.path}: the spec changed since this sweep started; "
                "resume with the original spec, or start over with --fresh"
            )
        _check_storage(run, stored, spec.storage)
        return stored["sweep_id"]
    if run.path.exists():
        if not fresh:
            raise SweepError(
                f"{run.path} exists: use --resume to continue that sweep, or --fresh to archive it and start over"
            )
        archive = run.archive()
        console.print(f"archived the previous sweep to {archive}")
    sweep_id = uuid.uuid4().hex
    # The resolved spec beside the results: `orchestrator.promote` and the notebook read it from here.
    spec_yaml = yaml.safe_dump(resolved_dict(spec), sort_keys=False)
    record = {"sweep_id": sweep_id, "spec_hash": spec_hash(spec), "name": spec.name}
    run.create(spec_yaml, record | ({"storage": storage_root(spec.storage)} if spec.storage else {}))
    return sweep_id


def _check_storage(run: RunDir, stored: dict[str, Any], storage: str | None) -> None:
    """A resumed sweep continues where its experiment is (sweep.json's storage); a storage asked for
    (spec or --storage) that names another place is refused rather than starting a second experiment."""
    kept = stored.get("storage")
    if storage is None or storage_root(storage) == kept:
        return
    where = f"on the storage {kept} (resume with --storage {kept}" if kept else "in its run folder (resume with no storage"
    raise SweepError(f"{run.path}: this sweep keeps its Tune experiment {where}, or start over with --fresh)")
