"""Conditional entries: `when: {param: value or [values]}` samples an entry only after those values.

    holds(entry.when, params)           # the condition is met by the params drawn so far
    meeting_params(entry.when)          # params that meet it (each param at its first wanted value)
    when_problems("specialist_weight", search, broken)   # load-time checks of one entry's condition

A condition names an earlier discrete search key (a choice, a grid or an int range) and values from
its domain; when it does not hold, the entry is not sampled and the base value stands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.search.entries import SearchEntry
from orchestrator.yamlio import Problem, did_you_mean, show


def holds(when: Mapping[str, Any] | None, params: Mapping[str, Any]) -> bool:
    """True when every `when` param was sampled with one of its wanted values."""
    for param, wanted in (when or {}).items():
        if param not in params or params[param] not in _values(wanted):
            return False
    return True


def meeting_params(when: Mapping[str, Any] | None) -> dict[str, Any]:
    """Params that meet the condition: each param at its first wanted value."""
    return {param: wanted[0] if isinstance(wanted, list) and wanted else wanted for param, wanted in (when or {}).items()}


def when_problems(key: str, search: Mapping[str, SearchEntry], broken: set[str]) -> list[Problem]:
    """The condition of `search[key]` names search keys listed before it, with values from their domains.

    `broken`: keys whose entries did not validate (their own problems are reported already).
    """
    keys = list(search)
    earlier = keys[: keys.index(key)]
    later = set(keys) - set(earlier)
    domains = {k: search[k].domain() for k in earlier}
    problems = []
    for param, wanted in (search[key].when or {}).items():
        where = ("search", key, "when", param)
        if param in broken:
            continue
        if param not in domains:
            found = f"{param!r}, listed after it" if param in later else f"unknown {param!r}"
            hint = did_you_mean(param, domains) if domains and param not in later else ""
            problems.append(Problem(where, f"expected a search key listed before this one, found {found}{hint}"))
        elif domains[param] is None:
            problems.append(
                Problem(where, f"expected a condition on a choice, grid or int key, found one on {param!r}")
            )
        elif not _values(wanted) or any(v not in domains[param] for v in _values(wanted)):
            problems.append(
                Problem(where, f"expected values of {param} ({show(domains[param])}), found {show(wanted)}")
            )
    return problems


def _values(wanted: Any) -> list[Any]:
    return wanted if isinstance(wanted, list) else [wanted]
