"""orchestrator.replicate on hand-made tables and fake run folders (no Ray, no training).

    .venv/bin/python -m pytest tests/test_replicate.py
"""

from __future__ import annotations

import json
import math

import polars as pl
import pytest

from orchestrator import replicate as rp
from orchestrator.replicate import CONTRADICTED, HOLDS, INCONCLUSIVE, Stat, cell_stats, judge_claim, verdict
from orchestrator.rundir import RunDir
from orchestrator.spec import load_spec
from orchestrator.sweep.dry_run import sample_params

PAPER_SPECS = sorted(rp.PAPER_DIR.glob("*.yaml"))


def test_cell_stats_mean_and_se_with_ddof_1():
    stat = cell_stats([1.0, 2.0, 3.0, None])
    assert stat.mean == 2.0 and stat.n == 3
    assert math.isclose(stat.se, 1.0 / math.sqrt(3))  # std (ddof 1) = 1
    assert cell_stats([]) == Stat(None, None, 0) and cell_stats([0.5]) == Stat(0.5, None, 1)


@pytest.mark.parametrize(
    ("better", "worse", "expected"),
    [
        (Stat(0.60, 0.01, 3), Stat(0.50, 0.01, 3), HOLDS),  # 0.10 > 2 * 0.0141
        (Stat(0.50, 0.01, 3), Stat(0.60, 0.01, 3), CONTRADICTED),
        (Stat(0.52, 0.01, 3), Stat(0.50, 0.01, 3), INCONCLUSIVE),  # 0.02 < 0.028
        (Stat(0.60, None, 1), Stat(0.50, 0.01, 3), INCONCLUSIVE),  # no SE from one seed
        (Stat(None, None, 0), Stat(0.50, 0.01, 3), INCONCLUSIVE),
    ],
)
def test_verdict_branches(better, worse, expected):
    assert verdict(better, worse) == expected


def test_claim_over_several_pairs():
    stats = {"a": Stat(0.6, 0.01, 3), "b": Stat(0.5, 0.01, 3), "c": Stat(0.59, 0.01, 3), "d": Stat(0.7, 0.01, 3)}
    assert judge_claim(stats, "a", ["b"]) == HOLDS
    assert judge_claim(stats, "a", ["b", "c"]) == INCONCLUSIVE
    assert judge_claim(stats, "a", ["b", "d"]) == CONTRADICTED
    assert judge_claim(stats, "a", ["missing"]) == INCONCLUSIVE


def test_combine_verdicts():
    assert rp.combine([HOLDS, HOLDS]) == HOLDS
    assert rp.combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert rp.combine([HOLDS, CONTRADICTED, INCONCLUSIVE]) == CONTRADICTED
    assert rp.combine([]) == INCONCLUSIVE


def test_spikes():
    assert rp.spiked([1.0, 50.0, 2.0]) and rp.spiked([1.0, float("nan")])
    assert not rp.spiked([1.0, 2.0, 3.0]) and not rp.spiked([])


def test_finding_table_counts_divergence_and_spikes():
    finding = rp.FINDINGS[1]  # teacher guidance
    trials = pl.DataFrame({
        "trial_id": ["a", "b", "c"], "status": ["FINISHED", "FAILED", "FINISHED"],
        "error": [None, "TrialDivergedError: training diverged at generator step 3", None],
        "score": [0.5, None, 0.7], "t2i_score": [0.5, None, 0.7], "t2i_score/text": [0.4, None, 0.6],
        "edit_score": [0.5, None, 0.7],
    })
    curves = pl.DataFrame({"trial_id": ["a", "a", "c", "c"], "loss/generator": [1.0, 1.5, 1.0, 100.0]})
    row = rp.finding_table(finding, {"0": trials}, {"0": curves})["cells"]["0"]
    assert row["diverged"] == 1 and math.isclose(row["divergence_rate"], 1 / 3)
    assert math.isclose(row["spike_rate"], 1 / 3)
    assert row["score"].mean == pytest.approx(0.6) and row["score"].n == 2


# -- fake run folders, end to end through main() ----------------------------------------------------

CATS = ["landscape", "portrait", "text"]


def _trials(cells: list[tuple[dict, float]]) -> pl.DataFrame:
    """One FINISHED trial per (params, t2i level) x seed 0..2; the seeds spread the scores by ±0.01."""
    rows = []
    for i, (params, level) in enumerate(cells):
        for seed in range(3):
            value = level + 0.01 * (seed - 1)
            rows.append({"trial_id": f"t{i}s{seed}", "status": "FINISHED", "error": None, "seed": seed, **params,
                         "score": value, "t2i_score": value, "edit_score": value,
                         **{f"t2i_score/{c}": value for c in CATS}})
    return pl.DataFrame(rows)


def _fake_run(runs_dir, spec_file: str, trials: pl.DataFrame) -> None:
    run = RunDir.of(runs_dir, load_spec(rp.PAPER_DIR / spec_file).name)
    run.path.mkdir(parents=True)
    run.marker.write_text(json.dumps({"sweep_id": "s", "spec_hash": "h", "name": run.name}))
    trials.write_parquet(run.trials)
    pl.DataFrame({"trial_id": trials["trial_id"], "loss/generator": [1.0] * trials.height}).write_parquet(run.curves)


def _fake_all(runs_dir) -> None:
    levels = {"landscape": 0.55, "portrait": 0.60, "text": 0.40, "mixed": 0.50, "text_heavy": 0.45}
    for mix, level in levels.items():
        _fake_run(runs_dir, f"data_composition_{mix}.yaml", _trials([({}, level)]))
    _fake_run(runs_dir, "teacher_guidance.yaml", _trials([({"teacher_switch_step": k}, 0.5) for k in range(5)]))
    ratios = {0.9: 0.40, 0.7: 0.55, 0.5: 0.60, 0.3: 0.50, 0.1: 0.45, 1.0: 0.30}
    _fake_run(runs_dir, "task_ratio.yaml", _trials([({"t2i_edit_ratio": r}, v) for r, v in ratios.items()]))


def test_main_reads_fake_runs_and_writes_the_table(tmp_path, capsys):
    _fake_all(tmp_path / "runs")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        rp.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    assert exit_info.value.code == 0
    report = json.loads((out / "replication.json").read_text())
    verdicts = {c["claim"]: c["verdict"] for table in report.values() for c in table["claims"]}
    assert verdicts["portrait slice beats the naive mix (E2 3.42 vs E5 3.02)"] == HOLDS
    assert verdicts["5:5 is best overall"] == HOLDS and all(verdicts[f"9:1 is worst overall: below {r}"] == HOLDS for r in ("7:3", "5:5", "1:9"))
    assert verdicts["7:3 is best on T2I among the joint ratios"] == CONTRADICTED  # 5:5 is ahead here
    assert verdicts["a mid-trajectory switch (k*=2) beats base alone (k*=4) on text"] == INCONCLUSIVE
    assert set(report["task_ratio"]["cells"]) == set(rp.RATIOS)
    assert report["teacher_guidance"]["cells"]["0"]["divergence_rate"] == 0.0
    assert report["data_composition"]["verdict"] == HOLDS  # every claim holds in the fake runs
    assert report["task_ratio"]["verdict"] == CONTRADICTED  # one claim is
    assert report["teacher_guidance"]["verdict"] == INCONCLUSIVE
    assert "| 5:5 | 3/3 |" in (out / "replication.md").read_text()
    assert "holds" in capsys.readouterr().out
    assert "**Finding: contradicted** (" in (out / "replication.md").read_text()


def test_missing_run_names_the_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        rp.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    out = capsys.readouterr().out
    assert "python -m orchestrator.replicate --run" in out and "data_composition_landscape" in out
    assert not (tmp_path / "out").exists()


# -- the shipped paper specs ------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.name)
def test_paper_spec_loads_as_a_full_grid_with_three_seeds_per_cell(path):
    spec = load_spec(path)
    assert path.read_text().startswith("# Question:")
    assert spec.sampler.name == "grid" and spec.scheduler is None and spec.confirm is None
    params = sample_params(spec, spec.budget.trials)
    cells = {}
    for p in params:
        cells.setdefault(tuple(sorted((k, v) for k, v in p.items() if k != "seed")), set()).add(p["seed"])
    assert len(params) == spec.budget.trials == len(cells) * 3  # the whole grid, every cell once per seed
    assert all(seeds == {0, 1, 2} for seeds in cells.values())


def test_every_finding_spec_ships():
    assert {s for f in rp.FINDINGS for s in f.specs.values()} == {p.name for p in PAPER_SPECS}
