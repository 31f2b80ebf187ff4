"""`--dry-run`: the resolved spec as YAML and the first recipes the spec's sampler proposes.

    print_dry_run(spec, n=8, console=Console())

Nothing is trained and nothing is written: the study lives in memory.
"""

from __future__ import annotations

from typing import Any

import optuna
import yaml
from rich import box
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table

from orchestrator.search import recipe_params
from orchestrator.search.samplers import make_sampler
from orchestrator.search.space import define_by_run
from orchestrator.spec import SweepSpec, resolved_dict
from orchestrator.sweep.progress import cell


def sample_params(spec: SweepSpec, n: int) -> list[dict[str, Any]]:
    """The first n params the configured sampler proposes, from an in-memory study.

    Nothing is told to the study, so every sampler falls back to its start-up (independent)
    sampling -- exactly what the first trials of a real sweep get.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=None, directions=spec.directions, sampler=make_sampler(spec.sampler, spec.search)
    )
    sample = define_by_run(spec.search)
    return [sample(study.ask()) for _ in range(n)]


def print_dry_run(spec: SweepSpec, n: int, console: Console) -> None:
    """The resolved spec as YAML, then a table of the first n sampled recipes (swept params only;
    simplex weights normalised, raw draws hidden)."""
    resolved = yaml.safe_dump(resolved_dict(spec), sort_keys=False, default_flow_style=None, width=100)
    console.print(Syntax(resolved, "yaml", background_color="default"))
    rows = [recipe_params(params) for params in sample_params(spec, n)]
    # One row per swept param, one column per recipe: full param names stay readable at 80 columns.
    console.print(f"First {n} recipes from the {spec.sampler.name} sampler (seed {spec.sampler.seed}):")
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("param", no_wrap=True)
    for i in range(n):
        table.add_column(f"#{i}", justify="right", no_wrap=True)
    for key in dict.fromkeys(key for row in rows for key in row):
        # '-': a conditional param that was not sampled (its base value stands)
        table.add_row(key, *(cell(row[key]) if key in row else "-" for row in rows))
    console.print(table)
