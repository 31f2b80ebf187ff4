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

Saving pickles the Optuna sampler, and a sampler may hold things that do not pickle (NSGA-II holds a
thread lock since Optuna 5.1). Such attributes are dropped when saving and rebuilt on restore from
a freshly made sampler (`SamplerSnapshot`); everything else, the random state included, is kept.
"""

from __future__ import annotations

import copy
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


class SamplerSnapshot:
    """The picklable state of an Optuna sampler: its attributes that pickle, and how to make the rest.

    `rebuild()` makes a fresh sampler with `factory` (the spec's own constructor) and puts the kept
    attributes back over it, so only what could not be saved (a lock, a cache handle) is new.
    """

    def __init__(self, sampler: BaseSampler, factory: Callable[[], BaseSampler] | None = None):
        self.factory = factory or type(sampler)
        self.kept: dict[str, Any] = {}
        self.dropped: list[str] = []
        for name, value in vars(sampler).items():
            try:
                pickle.dumps(value)
            except Exception:  # noqa: BLE001 -- whatever pickle refuses is rebuilt, not saved
                self.dropped.append(name)
            else:
                self.kept[name] = value

    def rebuild(self) -> BaseSampler:
        sampler = self.factory()
        vars(sampler).update(self.kept)
        return sampler


class SearcherNotSavable(RuntimeError):
    """The searcher's state cannot be saved with the experiment (so a sweep could not resume)."""


class DedupOptunaSearch(OptunaSearch):
    def __init__(
        self,
        *args: Any,
        max_retries: int = 50,
        sampler_factory: Callable[[], BaseSampler] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.max_retries = max_retries
        self.sampler_factory = sampler_factory  # rebuilds what of the sampler cannot be pickled
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

    # -- saving: Tune pickles the searcher into tuner.pkl and search-state files ---------------------

    def _saved_state(self) -> dict[str, Any]:
        """The searcher's attributes with the sampler as a SamplerSnapshot (the study holds none)."""
        state = self.__dict__.copy()
        study = state.get("_ot_study")
        sampler = study.sampler if study is not None else state.get("_sampler")
        if sampler is not None:
            state["_sampler"] = SamplerSnapshot(sampler, self.sampler_factory)
        if study is not None:
            saved = state["_ot_study"] = copy.copy(study)
            saved.sampler = None
            # Running Optuna trials hold their study: point them at the saved one, which holds no sampler.
            state["_ot_trials"] = {key: _with_study(t, saved) for key, t in self._ot_trials.items()}
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        snapshot = state.get("_sampler")
        if isinstance(snapshot, SamplerSnapshot):
            self._sampler = snapshot.rebuild()
            if self._ot_study is not None:
                self._ot_study.sampler = self._sampler

    def __getstate__(self) -> dict[str, Any]:
        return self._saved_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._load_state(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self._saved_state(), file)

    def restore(self, checkpoint_path: str) -> None:
        # Tune's own search-state file in the run folder (its experiment state is pickled throughout)
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)  # noqa: S301
        if isinstance(state, dict):
            self._load_state(state)
        else:  # written by Ray's OptunaSearch itself
            super().restore(checkpoint_path)

    def check_savable(self, sampler_name: str) -> None:
        """Raise SearcherNotSavable, naming the sampler and the cause, if saving would fail."""
        try:
            pickle.loads(pickle.dumps(self))
        except Exception as exc:  # noqa: BLE001 -- any failure means the sweep could not resume
            raise SearcherNotSavable(
                f"the {sampler_name} sampler cannot be saved with the sweep, so it could not resume: "
                f"{type(exc).__name__}: {exc}"
            ) from None


def _with_study(ot_trial: Any, study: Any) -> Any:
    out = copy.copy(ot_trial)
    out.study = study
    return out
