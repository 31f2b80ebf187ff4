"""Figures of a finished sweep, for notebooks/pareto_fronts.ipynb and the README.

    tables = results.load_sweep("runs/task_ratio")
    fig = front_by_axis(tables.trials, objectives)       # a matplotlib Figure, or None
    fig = hypervolume_curve(tables.trials, objectives, reference.read_reference("runs/task_ratio"))
    table = noise_table(tables.trials, objectives)       # mean ± SE, on the front, on the noise-aware set
    fig = score_plot(tables.trials, axes.AXES["t2i_edit_ratio"])
    paths = save_all("runs/task_ratio", "runs/task_ratio/figures")

Every function returns a `matplotlib.figure.Figure` built without pyplot (no global state: safe under
the Agg backend, in a notebook, in a loop), or None when the figure does not apply to this sweep (the
axis was not swept, no curves, no sample grid): `show` then says why instead of drawing. Only
FINISHED trials are drawn in the score plots; trials stopped early by ASHA have scores from an
earlier step (the front scatter shows them apart, as crosses). Scores are shown with their standard
errors where the table has them, and the front figure rings the trials the noise cannot rule out
(`pareto.noise_aware_front`) rather than calling differences inside it. The axes come from the registry in
orchestrator/axes.py: the front gets a panel per swept axis, each analysed axis a score figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from orchestrator import axes, effects, pareto, results
from orchestrator.axes import Axis
from orchestrator.metrics import SCORES
from orchestrator.reference import SOURCE, read_reference
from orchestrator.rundir import RunDir

DEFAULT_OBJECTIVES = {"t2i_score": "max", "edit_score": "max"}
SCORE_COLOURS = dict(zip(SCORES, ("black", "tab:blue", "tab:orange"), strict=True))
PANEL = (4.6, 3.8)  # inches per panel


def swept_axes(trials: pl.DataFrame) -> list[Axis]:
    """The registry's axes that vary over the finished trials."""
    done = effects.finished(trials)
    return [a for a in axes.AXES.values() if a.swept(done)]


def overview(trials: pl.DataFrame, objectives: Mapping[str, str] = DEFAULT_OBJECTIVES) -> pl.DataFrame:
    """The trials in start order with their status, swept axes, objectives and score (what to read first)."""
    columns = [c for a in swept_axes(trials) for c in a.columns(trials)]
    wanted = ["trial_id", "status", *columns, *dict.fromkeys([*objectives, "score"]), "wall_s"]
    return results.in_start_order(trials).select([c for c in wanted if c in trials.columns])


def noise_table(trials: pl.DataFrame, objectives: Mapping[str, str] = DEFAULT_OBJECTIVES,
                z: float = pareto.Z) -> pl.DataFrame:
    """The finished trials in start order: each objective as `value ± SE` (the value alone without an SE),
    `on_front` (the plain Pareto front) and `not_clearly_dominated` (no trial beats it by more than `z` SE
    on every objective: `pareto.noise_aware_front`)."""
    done = pareto.with_fronts(results.in_start_order(effects.finished(trials)), objectives, z)
    cells = [pl.Series(f"{m} ± SE", _with_se(done, m), dtype=pl.String) for m in objectives]
    ids = [done["trial_id"]] if "trial_id" in done.columns else []
    return pl.DataFrame([*ids, *cells, done["on_front"], done["not_clearly_dominated"]])


def _with_se(frame: pl.DataFrame, metric: str) -> list[str | None]:
    """`0.534 ± 0.020` per row, `0.534` where the row has no SE, None where it has no value."""
    se_column = pareto.se_column(metric)
    errors = frame[se_column].cast(pl.Float64) if se_column in frame.columns else [None] * frame.height
    return [None if v is None else f"{v:.3f}" if se is None or se != se else f"{v:.3f} ± {se:.3f}"
            for v, se in zip(frame[metric].cast(pl.Float64), errors, strict=True)]


def _panels(n: int, title: str, height: float = PANEL[1]) -> tuple[Figure, list]:
    fig = Figure(figsize=(PANEL[0] * n, height), layout="constrained")
    fig.suptitle(title)
    return fig, list(fig.subplots(1, n, squeeze=False)[0])


def _plotted_pair(objectives: Mapping[str, str]) -> dict[str, str]:
    """The two objectives a front scatter shows: the first two, else T2I vs Edit."""
    return dict(list(objectives.items())[:2]) if len(objectives) >= 2 else DEFAULT_OBJECTIVES


def front_by_axis(
    trials: pl.DataFrame, objectives: Mapping[str, str] = DEFAULT_OBJECTIVES, z: float = pareto.Z
) -> Figure | None:
    """Every trial on the first two objectives, one panel per swept axis, coloured by that axis.

    On the finished trials: ±1 SE error bars where the table has SEs (`<metric>_se`), the plain Pareto
    front as a staircase with its knee as a star, and red rings on the trials no other finished trial
    beats by more than `z` SE on both objectives (`pareto.noise_aware_front`: the ones the noise cannot
    rule out; a superset of the front).
    """
    pair = _plotted_pair(objectives)
    swept = swept_axes(trials)
    if not swept or any(m not in trials.columns for m in pair):
        return None
    done = effects.finished(trials)
    with_se = any(pareto.se_column(m) in done.columns for m in pair)
    rings = f"rings: {ring_label(z)}; bars: ±1 SE" if with_se else "rings: not strictly dominated (no SEs)"
    fig, panels = _panels(len(swept), f"Pareto front: {' vs '.join(pair)}\n"
                          f"line = front, star = knee, × = stopped early\n{rings}", height=PANEL[1] + 0.3)
    (x, y), marked = list(pair), trials.with_columns(_stopped(trials))
    for ax, axis in zip(panels, swept, strict=True):
        (_colour_by_group if axis.mix else _colour_by_value)(fig, ax, marked, (x, y), axis)
        ax.set(xlabel=x, ylabel=y, title=f"coloured by {axis.field}")
        ax.xaxis.set_major_locator(MaxNLocator(5))  # long tick labels when the scores are close together
        _draw_front(ax, done, pair, z)
    return fig


def ring_label(z: float = pareto.Z) -> str:
    """What a red ring on the front figure means."""
    return f"not dominated beyond {z:g} SE"


def _stopped(trials: pl.DataFrame) -> pl.Expr:
    """`_stopped`: the trial did not finish (drawn as a cross)."""
    return (pl.col("status") != "FINISHED" if "status" in trials.columns else pl.lit(False)).alias("_stopped")


def _colour_by_group(fig: Figure, ax, trials: pl.DataFrame, xy: tuple[str, str], axis: Axis) -> None:
    """A mix: one colour per group (its dominant component), in a legend."""
    (x, y), stopped, columns = xy, pl.col("_stopped"), axis.columns(trials)
    frame = axis.groups.assign(trials.drop_nulls(columns), columns)
    (key,) = axis.groups.keys(columns)
    for i, (name,) in enumerate(sorted(frame.select(key).unique().rows())):
        group = frame.filter(pl.col(key) == name)
        for part, marker in ((group.filter(~stopped), "o"), (group.filter(stopped), "x")):
            ax.scatter(part[x], part[y], color=f"C{i}", marker=marker, s=36, label=name if marker == "o" else None)
    ax.legend(title=axis.label, fontsize="small")


def _colour_by_value(fig: Figure, ax, trials: pl.DataFrame, xy: tuple[str, str], axis: Axis) -> None:
    """A scalar: a colour scale, with a tick at each value of an integer field."""
    (x, y), stopped, column = xy, pl.col("_stopped"), axis.field
    frame = trials.drop_nulls([column])
    values = frame[column].cast(pl.Float64)
    norm = (values.min(), values.max())
    arts = [
        ax.scatter(sub[x], sub[y], c=sub[column].cast(pl.Float64), cmap="viridis", marker=marker,
                   vmin=norm[0], vmax=norm[1], s=36)
        for sub, marker in ((frame.filter(~stopped), "o"), (frame.filter(stopped), "x"))
    ]
    bar = fig.colorbar(arts[0], ax=ax)
    bar.set_label(axis.label)
    if frame[column].dtype.is_integer():
        bar.set_ticks(sorted(set(frame[column].to_list())))


def _draw_front(ax, done: pl.DataFrame, pair: Mapping[str, str], z: float = pareto.Z) -> None:
    """On the finished trials `done`: error bars, the front's staircase, rings on the noise-aware set, the knee."""
    front = pareto.pareto_front(done, pair)
    if front.is_empty():
        return
    x, y = list(pair)
    _error_bars(ax, done, pair)
    line = front.sort(x)
    # the edge of the region the front dominates: down-then-across when x is maximised, across-then-down when not
    ax.step(line[x], line[y], where="pre" if pair[x] == "max" else "post", color="grey", lw=1, zorder=0)
    kept = pareto.noise_aware_front(done, pair, z)
    ax.scatter(kept[x], kept[y], facecolors="none", edgecolors="red", s=110, lw=1.2, label=ring_label(z))
    best = pareto.knee(front, pair)
    ax.scatter([best[x]], [best[y]], marker="*", color="red", s=220, zorder=3)
    ax.annotate("knee", (best[x], best[y]), xytext=(6, 6), textcoords="offset points", color="red")


def _error_bars(ax, done: pl.DataFrame, pair: Mapping[str, str]) -> None:
    """Thin grey ±1 SE bars on each finished trial with an SE on either plotted objective (a null SE: no bar)."""
    columns = [pareto.se_column(m) for m in pair]
    if not any(c in done.columns for c in columns):
        return
    frame = done.drop_nulls(list(pair)).with_columns(
        [pl.col(c).cast(pl.Float64) if c in done.columns else pl.lit(None, dtype=pl.Float64).alias(c) for c in columns]
    ).filter(pl.any_horizontal([pl.col(c).is_not_null() & ~pl.col(c).is_nan() for c in columns]))
    if frame.is_empty():
        return
    (x, y), (sx, sy) = list(pair), (frame[c].fill_null(0.0).fill_nan(0.0).to_numpy() for c in columns)
    ax.errorbar(frame[x].to_numpy(), frame[y].to_numpy(), xerr=sx, yerr=sy, fmt="none", ecolor="grey",
                elinewidth=0.7, alpha=0.7, zorder=0, label="±1 SE")


def hypervolume_curve(
    trials: pl.DataFrame,
    objectives: Mapping[str, str] = DEFAULT_OBJECTIVES,
    reference: Mapping[str, Any] | Sequence[float] | None = None,
) -> Figure | None:
    """Hypervolume of the finished trials' front after each trial, trials in start order.

    Start order is `started_at` (when Ray first ran the trial: the order the searcher proposed them),
    trial id order for tables written before that column existed. `reference` is the run's reference.json
    (`orchestrator.reference.read_reference`: the spec's values, else the teacher at the student's NFE) or
    one value per objective; an objective it lacks falls back to the worst finished value pushed out by
    10% of its range (`pareto.reference_point`), and the title says which. A trial not better than the
    reference on every objective adds nothing.
    """
    if not 1 <= len(objectives) <= 3 or any(m not in trials.columns for m in objectives):
        return None
    ordered = results.in_start_order(trials)
    done = effects.finished(ordered)
    if pareto.pareto_front(done, objectives).is_empty():
        return None
    point, sources = _hv_reference(done, objectives, reference)
    if "status" in ordered.columns:  # unfinished trials count as trials run that add no volume
        unfinished = pl.col("status") != "FINISHED"
        ordered = ordered.with_columns([pl.when(unfinished).then(None).otherwise(pl.col(m)).alias(m) for m in objectives])
    history = pareto.hypervolume_history(ordered, objectives, point)
    lines = reference_title(objectives, point, sources)
    fig, (ax,) = _panels(1, "Hypervolume over trials", height=3.4 + 0.2 * lines.count("\n"))
    ax.step(range(1, len(history) + 1), history, where="post", marker="o")
    ax.set_ylim(bottom=0)  # a volume: from zero, so a small gain looks small
    ax.set(xlabel="trials run (in start order)", ylabel="hypervolume")
    ax.set_title(lines, fontsize="medium")
    if history[-1] == 0:
        ax.text(0.5, 0.7, "no trial beat the reference on every objective", transform=ax.transAxes,
                ha="center", va="center", color="grey")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


NO_REFERENCE = "worst trial (no reference.json)"
"""The source named when a run has no reference.json and the worst finished trial stands in."""


def _hv_reference(
    done: pl.DataFrame, objectives: Mapping[str, str], reference: Mapping[str, Any] | Sequence[float] | None
) -> tuple[list[float], list[str]]:
    """The reference point, one value per objective, and where each value comes from."""
    if reference is not None and not isinstance(reference, Mapping):
        return [float(r) for r in reference], ["given"] * len(objectives)
    worst = pareto.reference_point(done, objectives)
    if not reference:
        return worst, [NO_REFERENCE] * len(objectives)
    sources = reference.get(SOURCE) or {}
    point, named = [], []
    for metric, fallback in zip(objectives, worst, strict=True):
        value = reference.get(metric)
        point.append(fallback if value is None else float(value))
        named.append("worst trial (not in reference.json)" if value is None else sources.get(metric, "reference.json"))
    return point, named


def reference_title(objectives: Mapping[str, str], point: Sequence[float], sources: Sequence[str]) -> str:
    """The hypervolume figure's title: each reference value with its source, sources said once when shared."""
    values = ", ".join(f"{m} = {v:.3g}" for m, v in zip(objectives, point, strict=True))
    if len(set(sources)) == 1:
        return f"reference: {sources[0]}\n{values}"
    return "reference:\n" + "\n".join(
        f"{m} = {v:.3g} ({s})" for m, v, s in zip(objectives, point, sources, strict=True))


def _score_scatter(ax, frame: pl.DataFrame, column: str, jitter: float = 0.0) -> None:
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every run
    for metric, colour in SCORE_COLOURS.items():
        if metric in frame.columns:
            x = frame[column].cast(pl.Float64).to_numpy() + rng.uniform(-jitter, jitter, frame.height)
            ax.scatter(x, frame[metric], color=colour, alpha=0.45, s=20)


def _means(ax, table: pl.DataFrame, x: str) -> None:
    for metric, colour in SCORE_COLOURS.items():
        if f"{metric}_mean" in table.columns:
            ax.errorbar(table[x], table[f"{metric}_mean"], yerr=table[f"{metric}_std"].fill_null(0.0),
                        color=colour, marker="s", capsize=3, label=f"{metric} (mean ± std)")
    ax.legend(fontsize="small")


def score_plot(trials: pl.DataFrame, axis: Axis) -> Figure | None:
    """The finished trials' scores against an analysed axis (None when it was not swept)."""
    return (_score_vs_weights if axis.mix else _score_vs_values)(trials, axis)


def _limits(axis: Axis) -> dict:
    return {"xlim": axis.plot.xlim} if axis.plot.xlim else {}


def _score_vs_values(trials: pl.DataFrame, axis: Axis) -> Figure | None:
    """Scores against the axis's value, with the mean ± std of each group at the group's position."""
    table = effects.effect(trials, axis)
    if table.is_empty():
        return None
    plot = axis.plot
    fig, (ax,) = _panels(1, plot.title, height=3.6)
    _score_scatter(ax, effects.finished(trials), axis.field, jitter=plot.jitter)
    position = axis.groups.keys([axis.field])[-1]
    _means(ax, table, position)
    if plot.ticks:
        ax.set_xticks(*plot.ticks(table, position))
    ax.set(xlabel=plot.xlabel, ylabel="score", **_limits(axis))
    return fig


def _score_vs_weights(trials: pl.DataFrame, axis: Axis) -> Figure | None:
    """Scores against each weight of a mix, one panel per component."""
    done = effects.finished(trials)
    if not axis.swept(done):
        return None
    columns = axis.columns(done)
    fig, panels = _panels(len(columns), axis.plot.title)
    for ax, column in zip(panels, columns, strict=True):
        _score_scatter(ax, done, column, jitter=axis.plot.jitter)
        ax.set(xlabel=f"{column} (weight)", ylabel="score", **_limits(axis))
    handles = [panels[0].scatter([], [], color=c, label=m) for m, c in SCORE_COLOURS.items() if m in done.columns]
    panels[-1].legend(handles=handles, fontsize="small")
    return fig


def learning_curves(curves: pl.DataFrame, front: pl.DataFrame, objectives: Mapping[str, str] = DEFAULT_OBJECTIVES) -> Figure | None:
    """Each objective (and score) over training steps: the front's trials in colour, the others grey."""
    metrics = [m for m in dict.fromkeys([*objectives, "score"]) if m in curves.columns]
    if curves.is_empty() or front.is_empty() or not metrics or "step" not in curves.columns:
        return None
    on_front = front["trial_id"].to_list()
    fig, panels = _panels(len(metrics), "Learning curves of the Pareto front's trials (others in grey)")
    for ax, metric in zip(panels, metrics, strict=True):
        for (trial_id,), curve in curves.sort("step").group_by("trial_id", maintain_order=True):
            if trial_id not in on_front:
                ax.plot(curve["step"], curve[metric], color="lightgrey", lw=1)
        for i, trial_id in enumerate(on_front):
            curve = curves.filter(pl.col("trial_id") == trial_id).sort("step")
            ax.plot(curve["step"], curve[metric], color=f"C{i % 10}", marker=".", label=trial_id)
        ax.set(xlabel="generator step", ylabel=metric, title=metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    panels[-1].legend(title="trial", fontsize="small")
    return fig


def knee_samples(run_dir: str | Path, front: pl.DataFrame, objectives: Mapping[str, str] = DEFAULT_OBJECTIVES) -> Figure | None:
    """The knee trial's final sample grid, titled with its scores."""
    if front.is_empty() or any(m not in front.columns for m in objectives):
        return None
    best = pareto.knee(front, objectives)
    try:
        run = RunDir.open(run_dir)  # the trials may be on the sweep's storage
    except FileNotFoundError:  # a bare Tune experiment folder (no sweep.json)
        run = RunDir(run_dir)
    path = run.samples(best["trial_id"])
    if path is None:
        return None
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    height = 6.0 * pixels.shape[0] / pixels.shape[1]
    fig, (ax,) = _panels(1, f"Knee trial {best['trial_id']}: final samples", height=height + 0.8)
    fig.set_figwidth(6.0)
    ax.imshow(pixels, interpolation="nearest")  # nearest: the tiny world's pixels stay crisp
    scores = ", ".join(f"{m} = {best[m]:.3f}" for m in objectives)
    ax.set_title(f"{scores}\nT2I samples (4 per prompt), then (source, edited) pairs", fontsize="medium")
    ax.axis("off")
    return fig


def show(fig: Figure | None, out_dir: str | Path, name: str, skipped: str) -> Figure | None:
    """Save `fig` as <out_dir>/<name>.png and return it (a notebook then displays it); if None, say why."""
    if fig is None:
        print(f"{name}: skipped, {skipped}")
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / f"{name}.png", dpi=110)
    return fig


def axis_figure(trials: pl.DataFrame, axis: Axis) -> tuple[Figure | None, str]:
    """An analysed axis's score figure, with the reason it may be skipped."""
    return score_plot(trials, axis), f"{axis.field} was not swept"


def figures(
    run_dir: str | Path, objectives: Mapping[str, str] | None = None
) -> dict[str, tuple[Figure | None, str]]:
    """Every figure of the sweep in `run_dir` by name, each with the reason it may be skipped.

    `objectives` default to the spec's (`results.sweep_objectives`), else T2I vs Edit.
    """
    objectives = objectives or results.sweep_objectives(run_dir) or DEFAULT_OBJECTIVES
    tables = results.load_sweep(run_dir)
    trials, front = tables.trials, pareto.pareto_front(effects.finished(tables.trials), objectives)
    return {
        "front": (front_by_axis(trials, objectives), "no swept axis to colour by"),
        "hypervolume": (hypervolume_curve(trials, objectives, read_reference(run_dir)),
                        "no finished trial with every objective"),
        **{axis.plot.name: axis_figure(trials, axis) for axis in axes.analysed()},
        "learning_curves": (learning_curves(tables.curves, front, objectives), "no curves of front trials"),
        "knee_samples": (knee_samples(run_dir, front, objectives), "the knee trial has no sample grid"),
    }


def save_all(run_dir: str | Path, out_dir: str | Path, objectives: Mapping[str, str] | None = None) -> list[Path]:
    """Write every figure that applies as <out_dir>/<name>.png; the paths written."""
    written = []
    for name, (fig, why) in figures(run_dir, objectives).items():
        if show(fig, out_dir, name, why) is not None:
            written.append(Path(out_dir) / f"{name}.png")
    return written
