"""The paper's three findings replicated in miniature: run (or read) the specs of `search_spaces/paper/`,
print and save a side-by-side table of mean ± SE over training seeds and a verdict per claim.

    python -m orchestrator.replicate                  # read the finished runs under runs/
    python -m orchestrator.replicate --run            # run the missing ones first (resuming killed ones)

Pure functions (`cell_stats`, `verdict`, `judge_claim`, `finding_table`) do the maths, so they are
tested on hand-made tables; main() only reads run folders, prints and writes replication.json/.md.
SE is the standard error of the mean over seeds (ddof 1); a claim "a > b" holds when the difference
exceeds 2 SE of the difference (the two cells' SEs added in quadrature), is contradicted when b > a by
more than that, and is inconclusive otherwise. Verdicts are marginal (no multiple-comparison correction).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec

PAPER_DIR = Path(__file__).parents[1] / "search_spaces" / "paper"
MIXES = ["landscape", "portrait", "text", "mixed", "text_heavy"]  # data_composition_<mix>.yaml
SPIKE_RATIO = 10.0
"""A trial 'spiked' when its largest reported |loss/generator| is over 10 x its smallest."""
HOLDS, CONTRADICTED, INCONCLUSIVE = "holds", "contradicted", "inconclusive"


@dataclass(frozen=True)
class Stat:
    mean: float | None
    se: float | None  # None with fewer than 2 values
    n: int


@dataclass(frozen=True)
class Claim:
    text: str
    metric: str
    better: str  # cell claimed ahead
    worse: list[str]  # cells claimed behind (each pair must resolve)


@dataclass(frozen=True)
class Finding:
    name: str
    specs: dict[str, str]  # cell -> spec file name in search_spaces/paper
    cell_of: str | None  # the swept field that names a cell inside one spec (None: one spec per cell)
    metrics: list[str]
    claims: list[Claim]


RATIOS = {"9:1": 0.9, "7:3": 0.7, "5:5": 0.5, "3:7": 0.3, "1:9": 0.1, "T2I only": 1.0}
JOINT = [r for r in RATIOS if r != "T2I only"]
FINDINGS = [
    Finding("data_composition", {m: f"data_composition_{m}.yaml" for m in MIXES}, None,
            ["t2i_score", "score", "t2i_score/landscape", "t2i_score/portrait", "t2i_score/text"],
            [Claim("portrait slice beats the naive mix (E2 3.42 vs E5 3.02)", "t2i_score", "portrait", ["mixed"]),
             Claim("text-only is worst on T2I (E3), vs landscape", "t2i_score", "landscape", ["text"]),
             Claim("text-only is worst on T2I (E3), vs portrait", "t2i_score", "portrait", ["text"]),
             Claim("text-only is worst on T2I (E3), vs the mix", "t2i_score", "mixed", ["text"]),
             Claim("text-only is worst on T2I (E3), vs text-heavy", "t2i_score", "text_heavy", ["text"])]),
    Finding("teacher_guidance", {"k*": "teacher_guidance.yaml"}, "teacher_switch_step",
            ["score", "t2i_score", "t2i_score/text", "edit_score"],
            [Claim("a mid-trajectory switch (k*=2) beats base alone (k*=4) on text", "t2i_score/text", "2", ["4"]),
             Claim("a mid-trajectory switch (k*=2) beats the specialist alone (k*=0)", "score", "2", ["0"])]),
    Finding("task_ratio", {"ratio": "task_ratio.yaml"}, "t2i_edit_ratio",
            ["score", "t2i_score", "edit_score"],
            [Claim("5:5 is best overall", "score", "5:5", [r for r in JOINT if r != "5:5"]),
             *[Claim(f"9:1 is worst overall: below {r}", "score", r, ["9:1"]) for r in JOINT if r != "9:1"],
             Claim("7:3 is best on T2I among the joint ratios", "t2i_score", "7:3", [r for r in JOINT if r != "7:3"]),
             *[Claim(f"joint {r} above the T2I-only baseline on T2I", "t2i_score", r, ["T2I only"]) for r in JOINT]]),
]


# -- pure maths -------------------------------------------------------------------------------------


def cell_stats(values: list[float | None]) -> Stat:
    """Mean and standard error of the mean (ddof 1) of the non-missing values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return Stat(None, None, 0)
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return Stat(mean, None, 1)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return Stat(mean, math.sqrt(var / len(xs)), len(xs))


def verdict(better: Stat, worse: Stat, z: float = 2.0) -> str:
    """holds: better - worse > z SE of the difference; contradicted: worse - better > z SE; else inconclusive."""
    if better.mean is None or worse.mean is None or better.se is None or worse.se is None:
        return INCONCLUSIVE
    diff, se = better.mean - worse.mean, math.hypot(better.se, worse.se)
    if diff > z * se:
        return HOLDS
    if -diff > z * se:
        return CONTRADICTED
    return INCONCLUSIVE


def judge_claim(stats: dict[str, Stat], better: str, worse: list[str]) -> str:
    """A claim over several pairs: contradicted if any pair is, holds if every pair does, else inconclusive."""
    return combine([verdict(stats.get(better, Stat(None, None, 0)), stats.get(w, Stat(None, None, 0))) for w in worse])


def combine(verdicts: list[str]) -> str:
    """Several verdicts as one (a claim's pairs, a finding's claims): contradicted if any is, holds if all do."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return HOLDS if verdicts and all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def spiked(losses: list[float]) -> bool:
    """One trial's reported |loss/generator| values: max > SPIKE_RATIO x min (or a non-finite one)."""
    xs = [abs(x) for x in losses if x is not None]
    if not xs:
        return False
    if not all(math.isfinite(x) for x in xs):
        return True
    return max(xs) > SPIKE_RATIO * max(min(xs), 1e-12)


def finding_table(finding: Finding, cells: dict[str, pl.DataFrame], curves: dict[str, pl.DataFrame] | None = None) -> dict:
    """{cell: {metric: Stat, "trials", "finished", "diverged", "divergence_rate", "spike_rate"}} + verdicts.

    `cells`: cell -> its trials (trials.parquet rows); `curves`: cell -> its reports (curves.parquet rows).
    Scores average the FINISHED trials; a FAILED trial whose error names a divergence counts as diverged."""
    rows = {}
    for cell, trials in cells.items():
        done = trials.filter(pl.col("status") == "FINISHED")
        row: dict = {m: cell_stats(done[m].to_list() if m in done.columns else []) for m in finding.metrics}
        errors = trials["error"].to_list() if "error" in trials.columns else [None] * trials.height
        diverged = sum(1 for s, e in zip(trials["status"], errors, strict=True) if s == "FAILED" and e and "iverged" in e)
        row |= {"trials": trials.height, "finished": done.height, "diverged": diverged,
                "divergence_rate": diverged / trials.height if trials.height else None}
        reports = (curves or {}).get(cell)
        if reports is not None and "loss/generator" in reports.columns and trials.height:
            ids = trials["trial_id"].to_list()
            flags = [spiked(reports.filter(pl.col("trial_id") == t)["loss/generator"].to_list()) for t in ids]
            row["spike_rate"] = sum(flags) / len(flags)
        else:
            row["spike_rate"] = None
        rows[cell] = row
    claims = [{"claim": c.text, "metric": c.metric,
               "verdict": judge_claim({k: r[c.metric] for k, r in rows.items()}, c.better, c.worse)}
              for c in finding.claims]
    return {"cells": rows, "claims": claims, "verdict": combine([c["verdict"] for c in claims])}


def _tally(claims: list[dict]) -> str:
    """'2 of 5 claims hold, 0 contradicted'."""
    verdicts = [c["verdict"] for c in claims]
    return f"{verdicts.count(HOLDS)} of {len(verdicts)} claims hold, {verdicts.count(CONTRADICTED)} contradicted"


# -- run folders ------------------------------------------------------------------------------------


def _cell_name(finding: Finding, value) -> str:
    if finding.name == "task_ratio":
        return next((k for k, v in RATIOS.items() if math.isclose(v, float(value))), str(value))
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def read_finding(finding: Finding, runs_dir: Path) -> tuple[dict, dict]:
    """(cells, curves) of a finding from its finished run folders (MissingRunError when one is absent)."""
    cells, curves = {}, {}
    for cell, spec_file in finding.specs.items():
        run = RunDir.of(runs_dir, load_spec(PAPER_DIR / spec_file).name)
        if not run.trials.is_file():
            raise MissingRunError(f"{run.path}: no finished run of search_spaces/paper/{spec_file}")
        trials = pl.read_parquet(run.trials)
        reports = pl.read_parquet(run.curves) if run.curves.is_file() else None
        if finding.cell_of is None:
            cells[cell], curves[cell] = trials, reports
            continue
        for value in sorted(set(trials[finding.cell_of].to_list())):
            name = _cell_name(finding, value)
            cells[name] = trials.filter(pl.col(finding.cell_of) == value)
            if reports is not None:
                curves[name] = reports.filter(pl.col("trial_id").is_in(cells[name]["trial_id"].to_list()))
    return cells, curves


class MissingRunError(FileNotFoundError):
    """A paper spec without a finished run folder."""


def run_all(runs_dir: Path) -> None:
    """Each paper spec through the sweep engine: finished runs skipped, killed ones resumed."""
    from orchestrator.sweep.engine import run_sweep  # imports Ray: only with --run

    for finding in FINDINGS:
        for spec_file in finding.specs.values():
            spec = load_spec(PAPER_DIR / spec_file)
            run = RunDir.of(runs_dir, spec.name)
            if not run.trials.is_file():
                run_sweep(spec, resume=run.marker.is_file(), runs_dir=runs_dir)


# -- output -----------------------------------------------------------------------------------------


def _fmt(stat: Stat) -> str:
    if stat.mean is None:
        return "—"
    return f"{stat.mean:.3f} ± {stat.se:.3f}" if stat.se is not None else f"{stat.mean:.3f} (n=1)"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def markdown(report: dict) -> str:
    """The replication as markdown tables: one per finding, then its verdicts."""
    lines = ["# Replication results", "", "Mean ± SE over training seeds (ddof 1); verdicts at 2 SE of the difference.", ""]
    for name, table in report.items():
        metrics = list(next(iter(table["cells"].values()))["metrics"]) if table["cells"] else []
        extra = ["divergence rate", "loss-spike rate"] if name == "teacher_guidance" else []
        lines += [f"## {name}", "", "| cell | n | " + " | ".join(metrics + extra) + " |",
                  "|---|---:|" + "---:|" * (len(metrics) + len(extra))]
        for cell, row in table["cells"].items():
            values = [_fmt(Stat(**row["metrics"][m])) for m in metrics]
            values += [_rate(row["divergence_rate"]), _rate(row["spike_rate"])] if extra else []
            lines.append(f"| {cell} | {row['finished']}/{row['trials']} | " + " | ".join(values) + " |")
        lines += ["", "| claim | metric | verdict |", "|---|---|---|"]
        lines += [f"| {c['claim']} | {c['metric']} | {c['verdict']} |" for c in table["claims"]]
        lines += ["", f"**Finding: {table['verdict']}** ({_tally(table['claims'])}).", ""]
    return "\n".join(lines)


def as_json(table: dict) -> dict:
    cells = {cell: {"metrics": {k: asdict(v) for k, v in row.items() if isinstance(v, Stat)},
                    **{k: v for k, v in row.items() if not isinstance(v, Stat)}} for cell, row in table["cells"].items()}
    return {"cells": cells, "claims": table["claims"], "verdict": table["verdict"]}


def print_report(report: dict, console: Console) -> None:
    for name, table in report.items():
        out = Table(title=name)
        metrics = list(next(iter(table["cells"].values()))["metrics"]) if table["cells"] else []
        for col in ["cell", "n", *metrics, *(["diverged", "spikes"] if name == "teacher_guidance" else [])]:
            out.add_column(col, justify="left" if col == "cell" else "right")
        for cell, row in table["cells"].items():
            extra = [_rate(row["divergence_rate"]), _rate(row["spike_rate"])] if name == "teacher_guidance" else []
            out.add_row(cell, f"{row['finished']}/{row['trials']}", *[_fmt(Stat(**row["metrics"][m])) for m in metrics], *extra)
        console.print(out)
        for claim in table["claims"]:
            console.print(f"  {claim['verdict']:>12}  {claim['claim']} ({claim['metric']})")
        console.print(f"  finding {name}: [bold]{table['verdict']}[/bold] ({_tally(table['claims'])})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.replicate", description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", default="runs", help="where the paper specs' run folders are (default runs)")
    parser.add_argument("--run", action="store_true", help="run the paper specs first (finished runs kept, killed ones resumed)")
    parser.add_argument("--out", default="docs/replication", help="folder for replication.json and replication.md")
    args = parser.parse_args(argv)
    console = Console()
    runs_dir = Path(args.runs_dir)
    if args.run:
        run_all(runs_dir)
    report = {}
    try:
        for finding in FINDINGS:
            report[finding.name] = as_json(finding_table(finding, *read_finding(finding, runs_dir)))
    except MissingRunError as error:
        console.print(f"[red]{error}[/red]\nrun them with: python -m orchestrator.replicate --run --runs-dir {runs_dir}")
        raise SystemExit(2) from None
    print_report(report, console)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "replication.json").write_text(json.dumps(report, indent=2))
    (out / "replication.md").write_text(markdown(report))
    console.print(f"saved {out / 'replication.json'} and {out / 'replication.md'}")
    raise SystemExit(0)


if __name__ == "__main__":
    main()
