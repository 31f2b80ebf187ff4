"""The sweep's summary on the console: its trials best first, the Pareto set, the confirmation's verdict,
why nothing finished.

    print_summary(tables, spec, console)       # the table `python -m orchestrator.sweep` ends with
    cause = no_result_cause(tables)            # one line when no trial has a result, else None

Every score is shown with its standard error where the table has one (`<metric>_se`: over the
benchmark's items for a trial; over training seeds for a confirmed recipe).
"""

from __future__ import annotations

from typing import Any

import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator import confirm, ranking
from orchestrator.results import Tables
from orchestrator.spec import SweepSpec


def shown_metrics(spec: SweepSpec) -> list[str]:
    """The metrics the console shows (summary table, progress lines): the objectives, then `score`, once each."""
    return list(dict.fromkeys([o.metric for o in spec.objectives] + ["score"]))


def sorted_trials(tables: Tables, spec: SweepSpec) -> pl.DataFrame:
    """Trials best first by the objectives in order (finished before stopped before failed)."""
    frame = tables.trials
    metrics = [o.metric for o in spec.objectives if o.metric in frame.columns]
    rank = pl.col("status").replace_strict({"FINISHED": 0, "STOPPED": 1}, default=2, return_dtype=pl.Int8)
    return frame.with_columns(_rank=rank).sort(
        ["_rank", *metrics],
        descending=[False, *[o.mode == "max" for o in spec.objectives if o.metric in metrics]],
        nulls_last=True,
    ).drop("_rank")


def print_summary(tables: Tables, spec: SweepSpec, console: Console) -> None:
    """The trials sorted by the objectives; `*` marks the Pareto set when there are several objectives."""
    frame = sorted_trials(tables, spec)
    params = [key for key in frame.columns if _is_param(key, spec)]
    metrics = [m for m in shown_metrics(spec) if m in frame.columns]
    pareto = set(tables.pareto["trial_id"]) if not tables.pareto.is_empty() else set()
    table = Table(box=box.SIMPLE_HEAD, title=f"{spec.name}: {len(frame)} trials")
    for column in ["trial", "status", *params, *metrics, "wall s"]:
        table.add_column(column, justify="left" if column in ("trial", "status") else "right", no_wrap=True)
    for row in frame.iter_rows(named=True):
        mark = "*" if row["trial_id"] in pareto and len(spec.objectives) > 1 else ""
        cells = [_cell(row.get(k)) for k in params] + [_with_se(row, m) for m in metrics]
        table.add_row(f"{row['trial_id']}{mark}", row["status"], *cells, f"{row['wall_s']:.0f}")
    console.print(table)
    if len(spec.objectives) > 1:
        console.print(f"* Pareto set on {', '.join(o.metric for o in spec.objectives)}: {len(pareto)} trials")
    if (frame["status"] == "STOPPED").any():
        # ASHA stops a trial between full evaluations: its scores are from the last quick benchmark.
        console.print(f"STOPPED trials: scores from the quick benchmark ({spec.base_recipe.eval_items_quick} items), "
                      f"FINISHED ones from the full benchmark ({spec.base_recipe.eval_items} items)")
    failed = frame.filter(pl.col("status") == "FAILED")
    for row in failed.iter_rows(named=True):
        console.print(f"  {row['trial_id']} failed: {row['error']}")
    if tables.confirm is not None:
        print_confirmation(tables, spec, console)


def print_confirmation(tables: Tables, spec: SweepSpec, console: Console) -> None:
    """The confirmed recipes (mean ± SE over their new seeds, the search's value beside) and the verdict."""
    metrics = shown_metrics(spec)
    stats = confirm.confirmed(tables.confirm, metrics, tables.trials)
    metric, mode = confirm.ranking_metric(spec)
    verdict = confirm.judge(stats, metric, mode)
    runs = tables.confirm
    done = int((runs["status"] == "FINISHED").sum()) if "status" in runs.columns else 0
    title = f"confirmation: {done} of {runs.height} runs finished, mean ± SE over new seeds"
    table = Table(box=box.SIMPLE_HEAD, title=title)
    for column in ["trial", "seeds", *metrics, f"search {metric}", f"vs leader ({metric})"]:
        table.add_column(column, justify="left" if column == "trial" else "right", no_wrap=True)
    by_id = {row["trial_id"]: row for row in stats.iter_rows(named=True)} if not stats.is_empty() else {}
    for standing in verdict.standings:
        row = by_id[standing.trial_id]
        versus = "leader" if standing.verdict == "leader" else f"{-standing.gap:+.3f} ± {standing.gap_se:.3f} {standing.verdict}"
        table.add_row(standing.trial_id, str(row["seeds"]), *[_with_se(row, m) for m in metrics],
                      _cell(row.get(f"search_{metric}")), versus)
    console.print(table)
    console.print(f"verdict: {verdict.text()}")
    objectives = {o.metric: o.mode for o in spec.objectives}
    if len(objectives) > 1 and not stats.is_empty():
        knee = ranking.ranked(stats, objectives)
        if knee:
            console.print(f"knee of the confirmed means on {', '.join(objectives)}: trial {knee[0]['trial_id']}")

def no_result_cause(tables: Tables) -> str | None:
    """Why a sweep produced nothing, in one line, when no trial has a result (FINISHED or STOPPED):
    the most common error among its trials. None when at least one trial has a result."""
    trials = tables.trials
    if trials.height and trials["status"].is_in(["FINISHED", "STOPPED"]).any():
        return None
    if not trials.height:
        return "no trial ran"
    errors = trials["error"].drop_nulls()
    if errors.is_empty():
        return f"no trial finished ({trials.height} trials, none with an error)"
    failed = int((trials["status"] == "FAILED").sum())
    top, count = errors.value_counts(sort=True).row(0)
    return f"no trial finished: {failed} of {trials.height} failed, {count} with {top}"


def _is_param(key: str, spec: SweepSpec) -> bool:
    return key in spec.search or key.partition(".")[0] in spec.search


def _with_se(row: dict[str, Any], metric: str) -> str:
    """`0.534±0.020` when the row has the metric's SE, else the value alone."""
    value, se = row.get(metric), row.get(f"{metric}_se")
    if not isinstance(value, float) or not isinstance(se, float) or se != se:
        return _cell(value)
    return f"{value:.3f}±{se:.3f}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
