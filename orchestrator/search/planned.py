"""A Tune searcher that proposes a fixed list of configs, each exactly once, even across a driver kill.

    searcher = PlannedSearch(configs)            # tune.TuneConfig(search_alg=searcher, num_samples=len(configs))

The confirmation stage (orchestrator.confirm) runs a plan made when the search ended. Tune saves a
searcher's state and the experiment's state one after the other; a driver killed between the two
writes would leave a counter that disagrees with the trials Tune restores (a planned run lost, or
made twice). So on restore the searcher takes what has been made from the experiment state itself,
the file Tune restores its trials from: a planned config is made when a known trial has it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher


def _identity(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


class PlannedSearch(Searcher):
    """Proposes `configs` in order, each once, then FINISHED (see the module docstring)."""

    def __init__(self, configs: Iterable[dict[str, Any]] = ()):
        super().__init__()
        self.configs = [dict(c) for c in configs]
        self.made: set[str] = set()

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for config in self.configs:
            if _identity(config) not in self.made:
                self.made.add(_identity(config))
                return dict(config)
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to learn: the plan is fixed."""

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(json.dumps({"configs": self.configs, "made": sorted(self.made)}))

    def restore(self, checkpoint_path: str) -> None:
        self.configs = json.loads(Path(checkpoint_path).read_text())["configs"]
        self.made = known_configs(Path(checkpoint_path).parent)


def known_configs(experiment_dir: Path) -> set[str]:
    """Identities of the configs of every trial in the experiment's newest state snapshot."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        return set()
    data = json.loads(states[-1].read_text())
    return {_identity(json.loads(trial_json)["config"]) for trial_json, _ in data.get("trial_data", [])}
