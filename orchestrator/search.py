"""The sweep's Tune searcher: Ray's OptunaSearch that never spends a trial on a recipe it already ran.

    searcher = DedupOptunaSearch(space=..., metric=[...], mode=[...], sampler=...)

A trial is deterministic in its recipe (the seed is part of it), so a sampler that proposes the same
point twice — NSGA-II and TPE do on the stepped axes of a small search, often — would spend a trial
to learn nothing. Each proposal is checked against the points already proposed; a repeat is answered
inside Optuna instead of being run: with its twin's objective values when the twin has finished (so
the sampler learns the point is taken), as FAIL while the twin still runs, and tagged with a
`duplicate_of` user attribute either way. Then Optuna is asked again, up to `max_retries` times;
when a small discrete space has no new point left the sweep ends instead of re-running old ones.
The searcher state (the seen points included) is saved with the experiment, so --resume keeps it.

Tune saves the searcher with the experiment by pickling it, sampler included, and a sampler may hold
things that do not pickle (NSGA-II holds a thread lock since Optuna 5.1). The sweep's sampler is
therefore a `PortableSampler`: it wraps the configured Optuna sampler and, when saved, keeps every
attribute of it that pickles (the random state included) and rebuilds the rest from a fresh one.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Callable
from typing import Any

from optuna.samplers import BaseSampler
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


class PortableSampler(BaseSampler):
    """The sampler `factory()` makes, in a form that pickles whatever that sampler holds.

    Every Optuna hook is passed to the wrapped sampler. Pickling keeps the wrapped sampler's
    attributes that pickle and the factory; unpickling makes a fresh sampler with the factory and
    puts the kept attributes back over it, so only what could not be saved (a lock) is new.
    """

    def __init__(self, factory: Callable[[], BaseSampler]):
        self.factory = factory
        self.inner = factory()

    def __str__(self) -> str:
        return f"PortableSampler({type(self.inner).__name__})"

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Any, trial: Any) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def __getstate__(self) -> dict[str, Any]:
        kept = {}
        for name, value in vars(self.inner).items():
            try:
                pickle.dumps(value)
            except Exception:  # noqa: BLE001 -- whatever pickle refuses is rebuilt, not saved
                continue
            kept[name] = value
        return {"factory": self.factory, "kept": kept}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.factory = state["factory"]
        self.inner = self.factory()
        vars(self.inner).update(state["kept"])


class SearcherNotSavable(RuntimeError):
    """The searcher's state cannot be saved with the experiment (so a sweep could not resume)."""


class DedupOptunaSearch(OptunaSearch):
    def __init__(self, *args: Any, max_retries: int = 50, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_retries = max_retries
        self._seen: dict[str, str] = {}  # canonical config -> id of the trial that runs it
        self._values: dict[str, Any] = {}  # finished trial id -> its objective value(s)
        self.duplicates = 0  # proposals answered without running them

    def suggest(self, trial_id: str) -> dict | str | None:
        for attempt in range(self.max_retries + 1):
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config
            key = json.dumps(config, sort_keys=True, default=str)
            twin = self._seen.get(key)
            if twin is None:
                self._seen[key] = trial_id
                return config
            self._answer_repeat(trial_id, twin, attempt)
        log.warning("no new point in %d proposals: the search space is exhausted", self.max_retries + 1)
        return Searcher.FINISHED

    def _answer_repeat(self, trial_id: str, twin: str, attempt: int) -> None:
        """Close the Optuna trial of a repeated point without running it, so the next ask is fresh."""
        ot_trial = self._ot_trials.pop(trial_id)
        ot_trial.set_user_attr("duplicate_of", twin)
        values = self._values.get(twin)
        if values is None:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        else:
            self._ot_study.tell(ot_trial, values)
        self.duplicates += 1
        log.info("proposal %d for %s repeats trial %s: asked again", attempt + 1, trial_id, twin)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result=result, error=error)
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if result and not error and all(result.get(m) is not None for m in metrics):
            values = [result[m] for m in metrics]
            self._values[trial_id] = values if isinstance(self.metric, list) else values[0]

    def check_savable(self, sampler_name: str) -> None:
        """Raise SearcherNotSavable, naming the sampler and the cause, if saving would fail.

        Tune saves the searcher twice: the whole object in tuner.pkl, its attributes in a state file.
        """
        try:
            pickle.dumps(self)
            pickle.dumps(self.__dict__.copy())
        except Exception as exc:  # noqa: BLE001 -- any failure means the sweep could not resume
            raise SearcherNotSavable(
                f"the {sampler_name} sampler cannot be saved with the sweep, so it could not resume: "
                f"{type(exc).__name__}: {exc}"
            ) from None

