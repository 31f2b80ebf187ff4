"""The search section as Optuna's define-by-run function: a trial's params, asked entry by entry.

    sample = define_by_run(spec.search)      # optuna.Trial -> params dict
    params = sample(study.ask())             # {"t2i_edit_ratio": 0.3, "category_mix.raw.text": ..., ...}

Entries are asked in spec order. A conditional entry (`when: {param: values}`) is asked only when
an earlier param took one of those values; otherwise the base value stands and the key is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from orchestrator.search.conditions import holds
from orchestrator.search.entries import SearchEntry


def define_by_run(search: Mapping[str, SearchEntry]) -> DefineByRun:
    """The define-by-run function over the spec's search entries."""
    return DefineByRun(list(search.items()))


class DefineByRun:
    """The define-by-run function as a plain object: Ray's OptunaSearch pickles it with its state."""

    def __init__(self, entries: list[tuple[str, SearchEntry]]):
        self.entries = entries

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, entry in self.entries:
            if holds(entry.when, params):
                params.update(entry.suggest(trial, key))
        return params
