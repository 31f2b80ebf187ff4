"""The metric vocabulary: which names a world reports, which way each improves, the headline scores.

    is_known_metric("t2i_score/text")        # True: a world metric, or one of its groups
    better("fd")                             # "min"
    metric_problem("scor", world)            # "unknown metric 'scor' of world 'tiny'; did you mean 'score'?"

A world (`trainers.world.WorldInfo`) lists its metrics with their direction, and the grouped ones
(`t2i_score/<category>`, `edit_score/<edit_type>`). Without a spec's world at hand, the helpers
use the embedded tiny world's.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from orchestrator.yamlio import did_you_mean, expected_name
from trainers.world import WorldInfo, world_info

# The headline scores, in the order tables and plots show them: the overall score, then its halves.
SCORES = ("score", "t2i_score", "edit_score")


@cache
def default_world() -> WorldInfo:
    """The embedded tiny world's info: what metric helpers use when no spec's world is at hand."""
    return world_info("tiny")


def is_known_metric(name: str, world: WorldInfo | None = None) -> bool:
    """True for a metric the world reports, or `t2i_score/<category>` / `edit_score/<edit_type>` of its groups."""
    return metric_problem(name, world or default_world()) is None


def better(metric: str, world: WorldInfo | None = None) -> Literal["max", "min"]:
    """The direction in which a known metric (or one of its groups) improves; KeyError for an unknown one."""
    return (world or default_world()).metrics[metric.partition("/")[0]]


def metric_problem(name: str, world: WorldInfo) -> str | None:
    """Why `name` is not a metric the world reports (None when it is one)."""
    head, slash, group = name.partition("/")
    if head not in world.metrics or (slash and head not in world.grouped):
        hint = did_you_mean(name, world.metrics).removeprefix("; ")
        groups = ", ".join(f"{metric}/<{kind}>" for metric, kind in world.grouped.items())
        return f"unknown metric {name!r} of world {world.name!r}; {hint}" + (f" (or {groups})" if groups else "")
    if slash and group not in world.groups(head):
        kind = world.grouped[head].replace("_", " ")
        what = f"{kind} in {head}/<{world.grouped[head]}>"
        return expected_name(what, group, world.groups(head), world.name)
    return None
