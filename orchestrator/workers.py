"""A trial on several Ray Train workers: `resources: {workers: N}` (DESIGN §10).

    trainable = make_worker_trainable(spec)   # the sweep engine picks it for N > 1

The Tune trial is a light driver (Ray's recommended Tune + Train pattern): it starts a
`TorchTrainer` whose N workers each call `trainers.distill` in one torch.distributed process group
(gloo on CPU, NCCL on GPU); `trainers/parallel.py` splits each batch and averages the gradients.
Rank 0 evaluates, writes the checkpoints and reports; every worker calls `ray.train.report`.

Reports reach Tune through a relay: a Train callback on the Train controller puts each report
(rank 0's metrics and the persisted checkpoint) on a queue, and the driver thread turns each into
one `tune.report` with that checkpoint. So ASHA sees every report, the trial's Tune checkpoints and
final sample grid are where a one-process trial has them (MLflow logging, promote and `--resume`
read them unchanged), and a retried trial resumes from its checkpoint.

Two kinds of failure are recovered at two levels:
- a worker (or its node) lost: Train restarts the worker group from its latest checkpoint
  (`FailureConfig(max_failures)` on the Train run), inside the same Tune trial;
- the driver lost: Tune retries the trial; the new TorchTrainer has the same name and storage, so
  Train restores its run from the latest checkpoint (else from Tune's checkpoint).
The driver holds no CPU or GPU of its own (DRIVER_RESOURCES): the workers do, and `budget.concurrent` bounds how many
trials run at once (Ray's advice: a Train run starts only when all its workers fit).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray import tune
from ray.train import UserCallback
from ray.train.torch import TorchTrainer
from ray.util.queue import Queue

from orchestrator import gate
from orchestrator.rundir import RunDir
from orchestrator.search import trial_recipe
from orchestrator.trial import TrialDivergedError  # the one error a diverged trial fails with
from trainers.checkpoint import checkpoint_step
from trainers.distill import distill
from trainers.divergence import DivergedError
from trainers.grid import sample_grid
from trainers.recipe import Recipe
from trainers.world import World, shared_world

# No CPU or GPU, so that the workers' requests alone decide what fits (a 2-CPU machine runs
# `{cpu: 2, workers: 2}`); Tune refuses an empty request, so the driver asks for a token of memory.
DRIVER_RESOURCES = {"cpu": 0, "memory": 2**20}
DIVERGED_KEY = "diverged"  # a worker's report of a divergence: the driver fails the trial with it
RESUMED_KEY = "resumed_from_step"  # reported by every attempt: 0 fresh, else the checkpoint's step
WORKER_PID_KEY = "worker_pid"  # rank 0's process: a restarted worker group reports a new one


def make_worker_trainable(spec: Any) -> Any:
    """The driver function with the spec's base, world and worker layout bound; it holds no resources."""
    fn = tune.with_parameters(
        run_trial_on_workers, base=dict(spec.base), world=(spec.world.name, spec.world.options),
        layout=worker_layout(spec),
    )
    return tune.with_resources(fn, DRIVER_RESOURCES)


def worker_layout(spec: Any) -> dict[str, Any]:
    """Workers per trial and what each holds: the trial's cpu and gpu split evenly (`{gpu: 8, workers: 8}`
    is one GPU each), and the worker restarts a Train run may make (the spec's max_failures)."""
    resources = spec.resources
    return {
        "workers": resources.workers,
        "cpu": resources.cpu / resources.workers,
        "gpu": resources.gpu / resources.workers,
        "max_failures": spec.budget.max_failures,
    }


def run_trial_on_workers(
    config: dict[str, Any], base: dict[str, Any], world: tuple[str, dict[str, Any]], layout: dict[str, Any]
) -> None:
    """The Tune trial: fail at once after a recorded divergence, else drive the Train run and relay its reports."""
    context = tune.get_context()
    marker = Path(context.get_trial_dir()) / RunDir.DIVERGED_FILE
    if marker.exists():  # divergence is deterministic: a retry fails at once instead of re-training
        raise TrialDivergedError(marker.read_text())
    relay = Queue(actor_options={"num_cpus": 0})
    trainer = _trainer(config, base, world, layout, context, relay)
    diverged = _relay_reports(trainer, relay)
    if diverged:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(diverged)
        raise TrialDivergedError(diverged)


def _trainer(config, base, world, layout, context, relay: Queue) -> TorchTrainer:
    """The trial's TorchTrainer: N workers, its run stored in the trial's own storage folder."""
    storage = context.get_storage()
    gpu = layout["gpu"] > 0
    return TorchTrainer(
        train_worker,
        train_loop_config={
            "config": config, "base": base, "world": world, "trial_id": context.get_trial_id(),
            "threads": max(1, int(layout["cpu"])),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=layout["workers"], use_gpu=gpu,
            resources_per_worker={"CPU": layout["cpu"], **({"GPU": layout["gpu"]} if gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name="train",
            storage_path=storage.trial_fs_path,
            storage_filesystem=storage.storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=layout["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[RelayToTune(relay)],
        ),
        resume_from_checkpoint=tune.get_checkpoint(),
    )


def _relay_reports(trainer: TorchTrainer, relay: Queue) -> str | None:
    """Run `trainer.fit()` beside this thread, which turns every relayed report into a `tune.report`.

    Returns a worker's divergence message, if one was reported; re-raises the Train run's failure.
    """
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # noqa: BLE001  (re-raised in the trial's thread below)
            failure.append(err)
        finally:
            relay.put(None)  # the end of the reports

    thread = threading.Thread(target=fit, name="train-run", daemon=True)
    thread.start()
    diverged = None
    while (item := relay.get()) is not None:
        metrics, checkpoint = item
        if DIVERGED_KEY in metrics:
            diverged = str(metrics[DIVERGED_KEY])
            continue
        tune.report(metrics, checkpoint=checkpoint)  # Tune copies it into the trial's checkpoints
    thread.join()
    if failure and diverged is None:
        raise failure[0]
    return diverged


class RelayToTune(UserCallback):
    """Train callback (on the Train controller): each report's rank-0 metrics and checkpoint onto the relay."""

    def __init__(self, relay: Queue):
        self.relay = relay

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        self.relay.put((dict(metrics[0]), checkpoint))


# -- the worker side ---------------------------------------------------------------------------


def train_worker(loop: dict[str, Any]) -> None:
    """One Train worker: the trial's recipe through `distill`, in the run's process group."""
    torch.set_num_threads(loop["threads"])
    recipe = trial_recipe(loop["base"], loop["config"])
    the_world = shared_world(*loop["world"])
    reporter = _WorkerReporter(the_world, recipe, loop["trial_id"])
    checkpoint = ray.train.get_checkpoint()
    try:
        if checkpoint is None:
            result = distill(recipe, the_world, reporter)
        else:
            with checkpoint.as_directory() as resume_from:
                reporter.resumed_from = checkpoint_step(resume_from)
                result = distill(recipe, the_world, reporter, resume_from=resume_from)
    except DivergedError as err:
        # every rank diverges at the same check (the gradients are averaged first); a report, not an
        # exception, so that Train does not restart a run that would diverge again
        ray.train.report({DIVERGED_KEY: str(err)})
        return
    reporter.finish(result.student)


class _WorkerReporter:
    """`on_report` for distill on a Train worker: rank 0 checkpoints and reports; every rank calls report."""

    def __init__(self, world: World, recipe: Recipe, trial_id: str):
        self.world, self.recipe, self.trial_id = world, recipe, trial_id
        self.rank = ray.train.get_context().get_world_rank()
        self.resumed_from = 0
        self._tmp = tempfile.TemporaryDirectory(prefix=f"dmd-worker{self.rank}-")
        self._final: tuple[dict[str, float], Path | None] | None = None

    def __call__(self, step: int, metrics: dict, save_checkpoint) -> bool:
        folder = save_checkpoint(Path(self._tmp.name) / f"step-{step:06d}") if self.rank == 0 else None
        if metrics.get("final"):
            self._final = (metrics, folder)  # reported by finish(), with the sample grid
            return False
        self._report(metrics, folder)
        return False

    def finish(self, student: torch.nn.Module) -> None:
        try:
            if self._final is not None:
                metrics, folder = self._final
                if folder is not None:
                    sample_grid(self.world, student, self.recipe, RunDir.samples_in(folder))
                    gate.wait_to_finish(self.trial_id)  # fault-injection runs only
                self._report(metrics, folder)
        finally:
            self._tmp.cleanup()

    def _report(self, metrics: dict[str, float], folder: Path | None) -> None:
        values = {key: float(value) for key, value in metrics.items()} | {
            RESUMED_KEY: float(self.resumed_from), WORKER_PID_KEY: float(os.getpid()),
            "workers": float(ray.train.get_context().get_world_size())}
        checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if folder is not None else None
        ray.train.report(values, checkpoint=checkpoint)  # copied to the run's storage before it returns
        if folder is not None:
            for path in sorted(folder.rglob("*"), reverse=True):  # keep the temp dir small between reports
                path.unlink() if path.is_file() else path.rmdir()
