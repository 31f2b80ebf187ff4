"""The sweep's Tune searcher: Ray's OptunaSearch that never spends a trial on a recipe it already ran.

    searcher = DedupOptunaSearch(space=define_by_run(spec.search), metric=[...], mode=[...], sampler=...)

A trial is deterministic in its recipe (the seed is part of it), so a sampler that proposes the same
point twice — NSGA-II and TPE do on the stepped axes of a small search, often — would spend a trial
to learn nothing. Each proposal is checked against the points already proposed; a repeat is answered
inside Optuna instead of being run: with its twin's objective values when the twin has finished (so
the sampler learns the point is taken), as FAIL while the twin still runs, and tagged with a
`duplicate_of` user attribute either way. Then Optuna is asked again, up to `max_retries` times;
when a small discrete space has no new point left the sweep ends instead of re-running old ones.
The searcher state (the seen points included) is saved with the experiment, so --resume keeps it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


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
