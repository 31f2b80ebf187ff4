"""The Ray Tune trainable: sampled params -> Recipe -> `trainers.distill`, reporting to Tune.

    trainable = make_trainable(spec)        # what the sweep engine hands to `tune.Tuner`

One trial is one `distill` call. Every report of the trainer becomes one `tune.report` with a
checkpoint folder (the trainer's safetensors checkpoint), so a retried trial (lost node, killed
driver) resumes from `tune.get_checkpoint()`. The final report also carries `samples.png`, a grid
of the student's samples, which the driver logs to MLflow.

Things every trial shares are built once per worker process, not per trial: the world (prompt
pools, the text encoder with its embedding cache, the evaluation set, which `trainers.evaluate`
caches per world object) and the frozen teachers. With `reuse_actors=True` consecutive trials run
in the same process and find them warm.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ray import tune

from orchestrator import gate
from orchestrator.rundir import RunDir
from orchestrator.search import trial_recipe
from trainers.distill import distill
from trainers.divergence import DivergedError
from trainers.grid import sample_grid
from trainers.recipe import Recipe
from trainers.world import World, shared_world


def make_trainable(spec: Any) -> Any:
    """The one-process trial function with the spec's base recipe and world bound, and its resources.

    (`resources.workers > 1`: `orchestrator.workers.make_worker_trainable`; the engine picks.)
    """
    fn = tune.with_parameters(
        run_trial,
        base=dict(spec.base),
        world=(spec.world.name, spec.world.options),
        threads=max(1, int(spec.resources.cpu)),
    )
    return tune.with_resources(fn, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def run_trial(
    config: dict[str, Any], base: dict[str, Any], world: tuple[str, dict[str, Any]], threads: int = 1
) -> None:
    """One trial: build the recipe, resume if Tune has a checkpoint, distil, report every evaluation."""
    # Concurrent torch processes thrash on few cores: one thread per requested CPU (DESIGN §10).
    torch.set_num_threads(threads)
    trial_dir = Path(tune.get_context().get_trial_dir())
    marker = trial_dir / RunDir.DIVERGED_FILE
    if marker.exists():  # divergence is deterministic: a retry fails at once instead of re-training
        raise TrialDivergedError(marker.read_text())
    recipe = trial_recipe(base, config)
    the_world = shared_world(*world)
    reporter = _Reporter(the_world, recipe)
    checkpoint = tune.get_checkpoint()
    try:
        if checkpoint is None:
            result = distill(recipe, the_world, reporter)
        else:
            with checkpoint.as_directory() as resume_from:
                result = distill(recipe, the_world, reporter, resume_from=resume_from)
    except DivergedError as err:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(err))
        # Ray pickles a trial's exception to the driver; DivergedError's (step, quantity) signature
        # does not survive that round trip, so the trial fails with a plain carrier of its message.
        raise TrialDivergedError(str(err)) from None
    reporter.finish(result.student)


class TrialDivergedError(RuntimeError):
    """A trial whose trainer diverged (non-finite loss, gradient or weights): recorded as FAILED."""


class _Reporter:
    """`on_report` for distill: intermediate reports go to Tune at once; the final one waits for the grid."""

    def __init__(self, world: World, recipe: Recipe):
        self.world, self.recipe = world, recipe
        self._tmp = tempfile.TemporaryDirectory(prefix="dmd-trial-")
        self._final: tuple[dict[str, float], Path] | None = None

    def __call__(self, step: int, metrics: dict, save_checkpoint: Callable[[str | Path], Path]) -> bool:
        folder = save_checkpoint(Path(self._tmp.name) / f"step-{step:06d}")
        if metrics.get("final"):
            self._final = (metrics, folder)  # reported by finish(), with the sample grid
            return False
        _report(metrics, folder)
        return False

    def finish(self, student: torch.nn.Module) -> None:
        try:
            if self._final is not None:
                metrics, folder = self._final
                sample_grid(self.world, student, self.recipe, RunDir.samples_in(folder))
                gate.wait_to_finish(tune.get_context().get_trial_id())  # fault-injection runs only
                _report(metrics, folder)
        finally:
            self._tmp.cleanup()


def _report(metrics: dict[str, float], folder: Path) -> None:
    """One Tune report; Tune copies the folder into the trial's storage, so ours can go."""
    tune.report(
        {key: float(value) for key, value in metrics.items()},
        checkpoint=tune.Checkpoint.from_directory(str(folder)),
    )
    for path in sorted(folder.rglob("*"), reverse=True):  # keep the temp dir small between reports
        path.unlink() if path.is_file() else path.rmdir()
