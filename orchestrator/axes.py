"""The registry of recipe axes: what the analysis of a sweep knows about each Recipe field it varies.

    axis = AXES["t2i_edit_ratio"]
    axis.columns(trials)                      # its column(s) in a trials table
    axis.swept(trials)                        # does it vary there?
    axis.groups.assign(frame, columns)        # the frame with the axis's group keys added

An entry names the Recipe field (the paper's word, spelled as in the spec, MLflow and trials.parquet),
a label, how its values are grouped for an effect table (`Buckets`, `Distinct`, `Dominant`) and how
its scores are drawn (`ScorePlot`, which also holds the notebook's words on it). orchestrator.effects,
orchestrator.plots and notebooks/pareto_fronts.ipynb loop over `AXES`: analysing one more axis is
one more entry here. An entry without groups only colours the Pareto front (no table, no figure).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

Ticks = Callable[[pl.DataFrame, str], tuple[list, list | None]]


@dataclass(frozen=True)
class Buckets:
    """Groups a share in [0, 1] into buckets between ascending inner `edges` (the first from 0, the
    last to 1): keys `<name>_lo`, `<name>_hi` and `<name>`, the centre, where its mean is drawn."""

    name: str
    edges: tuple[float, ...]

    def keys(self, columns: list[str]) -> tuple[str, ...]:
        return (f"{self.name}_lo", f"{self.name}_hi", self.name)

    def extras(self) -> list[pl.Expr]:
        return []

    def assign(self, frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
        (column,) = columns
        lo, hi, centre = self.keys(columns)
        edges = np.array([0.0, *self.edges, 1.0])
        index = np.searchsorted(np.asarray(self.edges), frame[column].to_numpy(), side="right")
        frame = frame.with_columns(pl.Series(lo, edges[index]), pl.Series(hi, edges[index + 1]))
        return frame.with_columns(((pl.col(lo) + pl.col(hi)) / 2).alias(centre))


@dataclass(frozen=True)
class Distinct:
    """One group per distinct integer value, keyed by the field itself (MLflow gives params back as floats)."""

    def keys(self, columns: list[str]) -> tuple[str, ...]:
        return tuple(columns)

    def extras(self) -> list[pl.Expr]:
        return []

    def assign(self, frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
        return frame.with_columns([pl.col(c).cast(pl.Int64) for c in columns])


@dataclass(frozen=True)
class Dominant:
    """Groups a mix by the name of its largest weight (the first on ties), keyed `key`; adds
    `dominant_weight` (that weight over the sum of the weights) and its mean per group, `mean_weight`."""

    key: str

    def keys(self, columns: list[str]) -> tuple[str, ...]:
        return (self.key,)

    def extras(self) -> list[pl.Expr]:
        return [pl.col("dominant_weight").mean().alias("mean_weight")]

    def assign(self, frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
        names = [c.partition(".")[2] for c in columns]
        weights = pl.concat_list([pl.col(c).cast(pl.Float64) for c in columns])
        return frame.with_columns(
            weights.list.arg_max().replace_strict(list(range(len(names))), names).alias(self.key),
            dominant_weight=weights.list.max() / weights.list.sum(),
        )


def value_ticks(table: pl.DataFrame, column: str) -> tuple[list, list | None]:
    """A tick at each group's value, labelled with it."""
    return table[column].to_list(), None


def ratio_ticks(table: pl.DataFrame, column: str) -> tuple[list, list | None]:
    """Ticks 0.1, 0.3, ... 0.9, each also written as the paper's T2I:Edit ratio (9:1 ... 1:9)."""
    ticks = np.round(np.arange(0.1, 1.0, 0.2), 1)
    return list(ticks), [f"{t:.1f}\n{round(10 * t)}:{round(10 - 10 * t)}" for t in ticks]


@dataclass(frozen=True)
class ScorePlot:
    """The scores against an axis (orchestrator.plots) and the notebook's section on it.

    A mix is drawn one panel per weight, each labelled with its column; any other axis as one panel
    with the mean ± std of each group at its position.
    """

    name: str  # the figure's name: <out_dir>/<name>.png
    title: str
    heading: str  # the notebook section's heading
    about: str  # the notebook section's text: what to look for
    xlabel: str = ""
    xlim: tuple[float, float] | None = None
    jitter: float = 0.0  # spreads trials that share a value, so their dots do not hide each other
    ticks: Ticks | None = None


@dataclass(frozen=True)
class Axis:
    """A recipe axis: its Recipe field, a label (colour bar or legend title) and how it is analysed."""

    field: str
    label: str
    mix: bool = False  # a name -> weight mapping: columns <field>.<name>
    groups: Buckets | Distinct | Dominant | None = None
    plot: ScorePlot | None = None

    def __post_init__(self) -> None:
        assert (self.groups is None) == (self.plot is None), f"{self.field}: an effect table and a figure go together"

    def columns(self, trials: pl.DataFrame) -> list[str]:
        """Its columns in `trials`: the field, or a mix's weights `<field>.<name>` (raw simplex draws excluded)."""
        if self.mix:
            return [c for c in trials.columns if c.startswith(f"{self.field}.") and ".raw." not in c]
        return [self.field] if self.field in trials.columns else []

    def swept(self, trials: pl.DataFrame) -> bool:
        """One of its columns takes at least two distinct non-null values (a constant one is a base value)."""
        return any(trials[c].drop_nulls().n_unique() >= 2 for c in self.columns(trials))


# Edges of the ratio buckets: centred on the 0.1 grid the shipped specs sample (9:1 ... 1:9), so a
# bucket holds one ratio of the paper's kind; ratios outside [0.05, 0.95) join the end buckets.
RATIO_BUCKETS = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))

# In the order of the front's panels, the figures and the notebook's sections; the paper's words (DESIGN §1).
AXES: dict[str, Axis] = {
    "t2i_edit_ratio": Axis(
        "t2i_edit_ratio", "T2I:Edit ratio (T2I share)", groups=Buckets("ratio", RATIO_BUCKETS), plot=ScorePlot(
            "score_vs_ratio", "Scores vs T2I:Edit ratio", "Scores vs the T2I:Edit ratio",
            "Each finished trial's `score`, `t2i_score` and `edit_score` against its T2I share, with the mean ± std "
            "per ratio. Crossing T2I and Edit curves are the trade-off; the peak of `score` is the best single ratio.",
            xlabel="t2i_edit_ratio (T2I:Edit)", xlim=(0, 1), ticks=ratio_ticks,
        ),
    ),
    "category_mix": Axis(
        "category_mix", "dominant category", mix=True, groups=Dominant("dominant_category"), plot=ScorePlot(
            "score_vs_category", "Scores vs the weight of each category in the data mix", "Scores vs the data mix",
            "One panel per prompt category: the scores against that category's weight in the distillation data. "
            "A trend in one panel says that category's share matters; the table groups trials by their dominant "
            "category.",
            xlim=(0, 1),
        ),
    ),
    "teacher_switch_step": Axis(
        "teacher_switch_step", "teacher switch step k*", groups=Distinct(), plot=ScorePlot(
            "score_vs_switch", "Scores vs teacher switch step", "Scores vs the teacher switch step",
            "The base teacher guides student steps before k*, the specialist from k* on (k* = 0: specialist only, "
            "k* = nfe: base only). Look for the step where the specialist starts to help without destabilising "
            "training.",
            xlabel="teacher_switch_step k*\n(base teacher before step k*, specialist from k* on)", jitter=0.08,
            ticks=value_ticks,
        ),
    ),
    "specialist_weight": Axis("specialist_weight", "specialist weight"),
    "guidance_scale": Axis("guidance_scale", "CFG guidance scale"),
    "critic_updates": Axis(
        "critic_updates", "critic updates per generator update", groups=Distinct(), plot=ScorePlot(
            "score_vs_critic_updates", "Scores vs critic updates per generator update",
            "Scores vs the critic updates (TTUR)",
            "DMD2's two time-scale update rule: the fake score (the critic) is updated `critic_updates` times per "
            "generator update so it keeps up with the moving student. Too few leave the distribution-matching "
            "gradient stale; each one more costs a fake-score update per step (the trials' `wall_s`). Look for the "
            "smallest ratio past which the scores stop improving.",
            xlabel="critic_updates\n(fake-score updates per generator update)", jitter=0.08, ticks=value_ticks,
        ),
    ),
}


def analysed() -> list[Axis]:
    """The axes with an effect table and a figure, in registry order."""
    return [a for a in AXES.values() if a.groups is not None]
