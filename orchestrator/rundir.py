"""Every file and folder of a sweep's run, named once: `runs/<name>/` and what goes in it.

    run = RunDir.of("runs", "task_ratio")        # runs/task_ratio, absolute
    run.marker, run.spec, run.tables             # sweep.json, spec.yaml, [trials, curves, pareto].parquet
    run.trial("ab12cd34")                        # runs/task_ratio/trial_ab12cd34: Ray's trial folder
    run.samples("ab12cd34")                      # the sample grid of its last checkpoint that has one
    run = RunDir.open(run.path)                  # with the Tune experiment where its sweep.json says

The layout (docs/sweeps.md shows it to users):

    runs/<name>/                    the Ray Tune experiment folder (resumable)
        sweep.json                  sweep id, spec hash, name: written once, read by --resume and promote
        spec.yaml                   the resolved spec (promote and the notebook read it)
        driver.log                  Ray's, MLflow's and Optuna's log lines
        trials.parquet, curves.parquet, pareto.parquet
        reference.json              the hypervolume reference point (the spec's, else the teacher at the student's NFE)
        confirm_plan.json           the confirmation stage's runs (source trial, seed), fixed once the search ends
        confirm/                    the confirmation stage's Ray Tune experiment (trial_<id>/ as above)
        confirm.parquet             one row per confirmation run
        mlflow_pending.jsonl        MLflow writes not delivered yet, and mlflow_pending/ their files
        trial_<id>/                 result.json (Ray: one line per report), diverged.txt,
                                    checkpoint_<n>/ (Ray's; the trainer's checkpoint, samples.png in the final)
        promoted/<run id>/          students saved by `python -m orchestrator.promote`
    runs/.<name>.new-<random>/      a run folder being made (moved to runs/<name> once whole)
    runs/<name>.archived-<time>/    a run folder that --fresh moved aside

With a `storage` (the spec's `storage:` or `--storage`: a folder every node mounts, or a URI such as
`s3://bucket/sweeps`), Ray Tune keeps the experiment -- the trial folders with their checkpoints, the
confirm/ experiment, Tune's state -- in `<storage>/<name>/<sweep id>` instead, and sweep.json records
the storage; everything else stays in the run folder. The sweep id makes the folder the sweep's own: a
second sweep of the same name (another machine, `--fresh`) never writes into it, and an archived run
folder still finds its experiment.

Pure paths and small file operations: no Ray, no MLflow (the notebook and promote import it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit


def is_uri(location: str) -> bool:
    """A URI (`s3://bucket/x`, `file:///mnt/x`), resolved by its scheme, rather than a path."""
    return "://" in location


def storage_root(storage: str) -> str:
    """A storage as sweep.json records it: a URI as given (no trailing /), a path made absolute
    (relative to the working directory, like --runs-dir: the Ray workers need it absolute)."""
    if is_uri(storage):
        parts = urlsplit(storage)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/")))
    return str(Path(storage).expanduser().resolve())


def join(location: str, *names: str) -> str:
    """`location/name/...` for a path or a URI (a URI's query, e.g. `?region=eu-west-1`, stays last)."""
    if not is_uri(location):
        return str(Path(location, *names))
    parts = urlsplit(location)
    return urlunsplit(parts._replace(path="/".join([parts.path.rstrip("/"), *names])))


def split(location: str) -> tuple[str, str]:
    """(parent, last name) of a path or a URI: Tune's `storage_path` and `name` for an experiment there."""
    if not is_uri(location):
        return str(Path(location).parent), Path(location).name
    parts = urlsplit(location)
    parent, _, name = parts.path.rstrip("/").rpartition("/")
    return urlunsplit(parts._replace(path=parent)), name


def local_folder(location: str) -> Path | None:
    """The location as a folder of this machine (a path, or a file:// URI); None on an object store."""
    if not is_uri(location):
        return Path(location)
    parts = urlsplit(location)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def experiment_in(storage: str, name: str, sweep_id: str) -> str:
    """Where the sweep `name` with id `sweep_id` keeps its Tune experiment on `storage`."""
    return join(storage_root(storage), name, sweep_id)


@dataclass(frozen=True)
class RunDir:
    """A sweep's run folder, `runs/<name>`: the names of everything in it."""

    path: Path
    experiment_at: str | None = None
    """Where Ray Tune keeps the experiment when not in this folder (`<storage>/<name>/<sweep id>`)."""

    SPEC_FILE = "spec.yaml"
    """The resolved spec, in the run folder and as an artifact of the sweep's MLflow run."""
    SAMPLES_FILE = "samples.png"
    """The sample grid in a trial's final checkpoint folder (the trial writes it, MLflow and plots read it)."""
    RESULT_FILE = "result.json"
    """Ray's log of a trial's reports in its trial folder, one JSON object a line."""
    DIVERGED_FILE = "diverged.txt"
    """In a trial folder once the trainer diverged: a retry re-raises without training again."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, runs_dir: str | Path, name: str) -> RunDir:
        """The run folder of the sweep `name` under `runs_dir` (absolute: Ray's storage path must be)."""
        return cls(Path(runs_dir).resolve() / name)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """A sweep's run folder with its Tune experiment where sweep.json says (FileNotFoundError without one)."""
        record = cls(path).record()
        storage = record.get("storage")
        return cls(path, experiment_in(storage, record["name"], record["sweep_id"]) if storage else None)

    @property
    def name(self) -> str:
        return self.path.name

    # -- the Ray Tune experiment --------------------------------------------------------------------

    @property
    def experiment(self) -> str:
        """Ray Tune's experiment folder, a path or a URI: what Tuner.restore and ExperimentAnalysis take."""
        return self.experiment_at or str(self.path)

    @property
    def tune_location(self) -> tuple[str, str]:
        """(storage_path, name) of tune.RunConfig for the experiment."""
        return split(self.experiment)

    @property
    def local_experiment(self) -> Path | None:
        """The experiment as a folder of this machine; None on an object store (read it through Ray)."""
        return local_folder(self.experiment)

    # -- the sweep's own files ----------------------------------------------------------------------

    @property
    def marker(self) -> Path:
        """sweep.json: {"sweep_id", "spec_hash", "name"} and "storage" when the sweep has one; its
        presence makes the folder a sweep's."""
        return self.path / "sweep.json"

    @property
    def spec(self) -> Path:
        """The resolved spec the sweep ran with."""
        return self.path / self.SPEC_FILE

    @property
    def driver_log(self) -> Path:
        return self.path / "driver.log"

    @property
    def trials(self) -> Path:
        """One row per trial."""
        return self.path / "trials.parquet"

    @property
    def curves(self) -> Path:
        """One row per report."""
        return self.path / "curves.parquet"

    @property
    def pareto(self) -> Path:
        """The finished trials no other finished trial dominates."""
        return self.path / "pareto.parquet"

    @property
    def tables(self) -> list[Path]:
        """trials, curves, pareto: the tables a finished sweep leaves, in that order."""
        return [self.trials, self.curves, self.pareto]

    @property
    def reference(self) -> Path:
        """{metric: value}: the hypervolume reference point of the sweep's objectives."""
        return self.path / "reference.json"

    @property
    def confirm_plan(self) -> Path:
        """The confirmation runs, written once when the search ends (so a resumed stage runs the same ones)."""
        return self.path / "confirm_plan.json"

    @property
    def confirm(self) -> RunDir:
        """The confirmation stage's Tune experiment folder, laid out like a run folder's trials
        (inside the search's experiment, on the storage when there is one)."""
        return RunDir(self.path / "confirm", None if self.experiment_at is None else join(self.experiment_at, "confirm"))

    @property
    def confirm_table(self) -> Path:
        """One row per confirmation run (its source trial, seed, status and metrics)."""
        return self.path / "confirm.parquet"

    @property
    def journal(self) -> Path:
        """The MLflow outbox's journal: exists only while writes are pending."""
        return self.path / "mlflow_pending.jsonl"

    @property
    def outbox_files(self) -> Path:
        """Copies of the files the pending MLflow writes upload (Tune prunes old checkpoints)."""
        return self.path / "mlflow_pending"

    def promoted(self, run_id: str) -> Path:
        """Where `orchestrator.promote` saves the student of its MLflow run `run_id`."""
        return self.path / "promoted" / run_id

    # -- trials -------------------------------------------------------------------------------------

    @staticmethod
    def trial_dirname(trial_id: str) -> str:
        """A trial folder's name: the trial id only (Ray's default packs every param into it)."""
        return f"trial_{trial_id}"

    def trial(self, trial_id: str) -> Path:
        """The trial's folder in the experiment (ValueError for an experiment on an object store)."""
        if self.local_experiment is None:
            raise ValueError(f"{self.experiment}: an object store, not a folder of this machine")
        return self.local_experiment / self.trial_dirname(trial_id)

    def result_files(self) -> list[Path]:
        """Every trial's result.json (one JSON line per report; the driver appends them as they arrive);
        none for an experiment on an object store."""
        if self.local_experiment is None:
            return []
        return sorted(self.local_experiment.glob(f"{self.trial_dirname('*')}/{self.RESULT_FILE}"))

    def checkpoints(self, trial_id: str) -> list[Path]:
        """The trial's checkpoint folders that Tune keeps, oldest first (Tune names them checkpoint_000001, ...);
        none for an experiment on an object store."""
        if self.local_experiment is None:
            return []
        return sorted(path for path in self.trial(trial_id).glob("checkpoint_*") if path.is_dir())

    def samples(self, trial_id: str) -> Path | None:
        """The sample grid of the trial's last checkpoint that has one; None when none has."""
        grids = [self.samples_in(folder) for folder in self.checkpoints(trial_id)]
        return next((grid for grid in reversed(grids) if grid.is_file()), None)

    @classmethod
    def samples_in(cls, checkpoint: str | Path) -> Path:
        """The sample grid's path in a checkpoint folder (wherever Tune has put that folder)."""
        return Path(checkpoint) / cls.SAMPLES_FILE

    # -- the folder's life --------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """What sweep.json holds (FileNotFoundError when the folder is not a sweep's)."""
        return json.loads(self.marker.read_text())

    def create(self, spec_yaml: str, record: dict[str, Any]) -> None:
        """Make the run folder with its spec and sweep.json, whole or not at all.

        Made beside its place, then moved there: a kill never leaves a half-made run folder. What a
        start killed right there left beside it is removed first.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.name}.new-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = RunDir(Path(tempfile.mkdtemp(prefix=f".{self.name}.new-", dir=self.path.parent)))
        staging.spec.write_text(spec_yaml)
        staging.marker.write_text(json.dumps(record))
        staging.path.rename(self.path)

    def archive(self) -> Path:
        """Move the run folder aside, to runs/<name>.archived-<local time>; returns where it went."""
        archive = self.path.with_name(f"{self.name}.archived-{time.strftime('%Y%m%d-%H%M%S')}")
        self.path.rename(archive)
        return archive
