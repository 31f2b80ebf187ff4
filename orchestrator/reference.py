"""The hypervolume reference point of a sweep: fixed, and meaningful, so that sweeps can be compared.

    values = ensure_reference(run, spec)       # {"t2i_score": 0.41, "edit_score": 0.25}, runs/<name>/reference.json
    stored = read_reference("runs/task_ratio") # the file as written, with a "source" per metric; None if none

The rule, per objective: the spec's `reference` when it gives one, else the base teacher sampled at the
base recipe's NFE with its CFG scale and timestep shift, on the trials' own final benchmark (the same
items and noise): "no distillation". A trial not better than that on every objective adds no
hypervolume. (A worst-trial reference, `pareto.reference_point`, moves with the trials themselves:
two sweeps' hypervolumes are then not comparable.) When the sweep searches `nfe`, `guidance_scale` or
`timestep_shift`, the base recipe's values are the ones used; the source says which NFE.

The file, `RunDir.reference`, is computed once (the sweep engine calls `ensure_reference` when a sweep
ends) and reused afterwards: a value edited by hand stays. It is a JSON object

    {"t2i_score": 0.41, "edit_score": 0.25, "source": {"t2i_score": "spec", "edit_score": "teacher@4"}}

written atomically (a tmp file, then a rename). No Ray, no MLflow; torch loads only when a teacher is
scored, so the notebook and plots read the file without it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from orchestrator.rundir import RunDir

SOURCE = "source"  # the key of {metric: "spec" | "teacher@<nfe>"} in reference.json


def spec_reference(spec: Any) -> dict[str, float | None]:
    """{metric: the spec's reference} for each objective, None where the spec gives none."""
    return {o.metric: o.reference for o in spec.objectives}


def teacher_source(spec: Any) -> str:
    """`teacher@<nfe>`: what a reference scored on the teacher is, at the base recipe's NFE."""
    return f"teacher@{spec.base_recipe.nfe}"


def teacher_reference(spec: Any) -> dict[str, float]:
    """{metric: score} of the base teacher at the base recipe's NFE, for each objective metric.

    Scored as `orchestrator.promote` and benchmarks/student_quality.py score teacher@nfe: the recipe's CFG
    scale and timestep shift, on `EvalConfig(items=recipe.eval_items)` (the items and noise of a trial's
    final evaluation).
    """
    # here, not at the top: torch and the world load only when a teacher is scored
    from trainers.evaluate import EvalConfig, evaluate_teacher
    from trainers.world import shared_world

    recipe = spec.base_recipe
    world = shared_world(spec.world.name, spec.world.options)
    teacher = world.load_teachers()["base"].model
    scores = evaluate_teacher(world, teacher, recipe.nfe, EvalConfig(items=recipe.eval_items),
                              recipe.guidance_scale, recipe.timestep_shift)
    metrics = [o.metric for o in spec.objectives]
    missing = [m for m in metrics if m not in scores]
    if missing:
        raise ValueError(f"the teacher's evaluation reports no {missing[0]!r} ({', '.join(sorted(scores))}): "
                         f"give objectives[].reference for it in the spec")
    return {m: float(scores[m]) for m in metrics}


def read_reference(run_dir: str | Path | RunDir) -> dict[str, Any] | None:
    """The run's reference.json as written ({metric: value, "source": {metric: source}}); None when it has none."""
    path = (run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)).reference
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: expected a JSON object of reference values, found invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of reference values, found {type(data).__name__}")
    return data


def ensure_reference(run: RunDir, spec: Any) -> dict[str, float]:
    """{metric: reference} for the spec's objectives (in their order): the run's reference.json, computed first
    if the run has none.

    Reused, not recomputed: values already in the file stay (edited by hand or not). Objectives the file
    lacks are filled, the spec's value first and the teacher (`teacher_reference`, scored once) for the
    rest; the file is then rewritten atomically with a source per metric ("spec" | "teacher@<nfe>").
    The run folder must exist.
    """
    stored = read_reference(run) or {}
    metrics = [o.metric for o in spec.objectives]
    known = {m: _number(stored[m], m, run.reference) for m in metrics if m in stored}
    if len(known) == len(metrics):
        return known
    sources = dict(stored.get(SOURCE) or {})
    given = {m: v for m, v in spec_reference(spec).items() if m not in known and v is not None}
    left = [m for m in metrics if m not in known and m not in given]
    scored = teacher_reference(spec) if left else {}
    fresh = {**given, **{m: scored[m] for m in left}}
    sources.update({m: "spec" if m in given else teacher_source(spec) for m in fresh})
    values = {**known, **fresh}
    _write(run.reference, {**{k: v for k, v in stored.items() if k != SOURCE}, **values, SOURCE: sources})
    return {m: values[m] for m in metrics}


def _number(value: Any, metric: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"{path}: expected a number for {metric!r}, found {value!r}")
    return float(value)


def _write(path: Path, data: dict[str, Any]) -> None:
    """`data` as JSON at `path`, whole or not at all: a kill mid-write leaves the old file (or none)."""
    tmp = path.with_suffix(".json.tmp")
    try:
        with tmp.open("w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the rename; a failed write leaves nothing behind
