"""Promotion of a sweep's winner: the pick rules, the seed check, the full run, the registry, the CLI.

Run: .venv/bin/python -m pytest tests/test_promote.py -q

The pick rules and the seed check are checked on hand-made trials tables (milliseconds); the
end-to-end tests promote trials of the shared `micro_sweep` (real DMD, MLflow store and registry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from sweep_helpers import write_spec

from orchestrator import pareto, results
from orchestrator.promote import main
from orchestrator.promote_pick import PromoteError, SeedStats, candidates, open_sweep, run_seeds, seed_check
from orchestrator.promote_run import CARD_FILE, PromotionTracker
from orchestrator.spec import load_spec, resolved_dict, spec_hash
from orchestrator.trial import shared_world
from trainers.evaluate import EvalConfig, build_eval_set, evaluate, student_generator
from trainers.models import FlowModel
from trainers.recipe import Recipe

ROOT = Path(__file__).parent.parent

# (trial, status, t2i_score, edit_score): b is the knee; d is dominated by b; f would dominate
# everything but was stopped early, e failed without metrics.
TRIALS = [
    ("a", "FINISHED", 0.9, 0.1),
    ("b", "FINISHED", 0.6, 0.6),
    ("c", "FINISHED", 0.1, 0.9),
    ("d", "FINISHED", 0.5, 0.5),
    ("e", "FAILED", None, None),
    ("f", "STOPPED", 0.95, 0.95),
]


def _table(trials=TRIALS) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "trial_id": [t[0] for t in trials],
            "status": [t[1] for t in trials],
            "t2i_edit_ratio": [0.1 * (i + 1) for i in range(len(trials))],
            "t2i_score": [t[2] for t in trials],
            "edit_score": [t[3] for t in trials],
            "score": [None if t[2] is None else (t[2] + t[3]) / 2 for t in trials],
            "mlflow_run_id": [f"run-{t[0]}" for t in trials],
        }
    )


def _fake_sweep(folder: Path, checkpoints: Path, trials=TRIALS, **sections) -> tuple[Path, Path]:
    """A run folder as the sweep leaves it (sweep.json, trials.parquet), without training anything."""
    spec_path = write_spec(folder, checkpoints, **sections)
    run_dir = folder / "runs" / "micro"
    run_dir.mkdir(parents=True)
    marker = {"sweep_id": "sweep-1", "spec_hash": spec_hash(load_spec(spec_path)), "name": "micro"}
    (run_dir / "sweep.json").write_text(json.dumps(marker))
    table = _table(trials)
    for name, frame in zip(results.FILES, (table, table.clear(), table.clear()), strict=True):
        frame.write_parquet(run_dir / name)
    return run_dir, spec_path


def _ids(rows) -> list[str]:
    return [r["trial_id"] for r in rows]


# -- the pick rules -----------------------------------------------------------------------------


def test_pick_orders_finished_trials(tmp_path, micro_checkpoints):
    run_dir, spec_path = _fake_sweep(tmp_path, micro_checkpoints)
    sweep = open_sweep(run_dir, spec_path)
    knee = candidates(sweep, "knee")
    # front {a, b, c} by distance to utopia (b; a and c tie and keep their order), then the next front {d}
    assert _ids(knee) == ["b", "a", "c", "d"]
    front = pareto.pareto_front(sweep.finished(), pareto.objectives_of(sweep.spec))
    assert knee[0]["trial_id"] == pareto.knee(front, pareto.objectives_of(sweep.spec))["trial_id"]
    assert _ids(candidates(sweep, "best")) == ["a", "b", "d", "c"]  # the first objective, t2i_score
    assert _ids(candidates(sweep, "best:edit_score")) == ["c", "b", "d", "a"]
    assert _ids(candidates(sweep, "trial:d")) == ["d"]
    assert sweep.recipe(knee[0]) == Recipe.from_params(sweep.spec.base, {"t2i_edit_ratio": 0.2})


def test_knee_of_one_objective_is_best(tmp_path, micro_checkpoints):
    run_dir, spec_path = _fake_sweep(
        tmp_path, micro_checkpoints, objectives=[{"metric": "edit_score", "mode": "max"}]
    )
    sweep = open_sweep(run_dir, spec_path)
    assert _ids(candidates(sweep, "knee")) == _ids(candidates(sweep, "best")) == ["c", "b", "d", "a"]


@pytest.mark.parametrize(
    "pick, message",
    [
        ("trial:zzz", "no such trial in .*; finished trials: a, b, c, d$"),
        ("trial:f", "the trial is STOPPED, not FINISHED; finished trials: a, b, c, d$"),
        ("best:fd", "no metric 'fd' in trials.parquet; metrics: t2i_score, edit_score, score"),
    ],
)
def test_bad_picks_name_the_valid_choices(pick, message, tmp_path, micro_checkpoints):
    sweep = open_sweep(*_fake_sweep(tmp_path, micro_checkpoints))
    with pytest.raises(PromoteError, match=message):
        candidates(sweep, pick)


def test_no_finished_trials(tmp_path, micro_checkpoints):
    trials = [("a", "FAILED", None, None), ("b", "STOPPED", 0.2, 0.3), ("c", "FINISHED", float("nan"), 0.5)]
    sweep = open_sweep(*_fake_sweep(tmp_path, micro_checkpoints, trials=trials))
    for pick in ("knee", "best"):  # a NaN objective is no value
        with pytest.raises(
            PromoteError,
            match=r"no finished trials with values for t2i_score, edit_score to promote \(1 FAILED, 1 FINISHED, 1 STOPPED\)$",
        ):
            candidates(sweep, pick)


def test_spec_kept_in_the_run_folder_is_found(tmp_path, micro_checkpoints):
    """A run folder with the resolved spec as spec.yaml needs no --spec (and the resolved spec hashes the same)."""
    run_dir, spec_path = _fake_sweep(tmp_path, micro_checkpoints)
    resolved = yaml.safe_dump(resolved_dict(load_spec(spec_path)), sort_keys=False)
    (run_dir / "spec.yaml").write_text(resolved)
    assert open_sweep(run_dir).spec == load_spec(spec_path)


# -- the seed check -------------------------------------------------------------------------------


def _stats(trial_id: str, values: list[float]) -> SeedStats:
    return SeedStats(trial_id, [{"score": v} for v in values])


def test_seed_check_needs_a_lead_beyond_the_noise():
    decisive = seed_check([_stats("x", [0.40, 0.42]), _stats("y", [0.50, 0.51])], "score", "max")
    assert decisive.leader.trial_id == "y" and decisive.runner_up.trial_id == "x"
    assert decisive.lead == pytest.approx(0.095) and decisive.noise == pytest.approx(0.0141, abs=1e-4)
    assert decisive.decisive
    lucky = seed_check([_stats("x", [0.50, 0.40]), _stats("y", [0.46, 0.47])], "score", "max")
    assert lucky.leader.trial_id == "y" and lucky.lead == pytest.approx(0.015) and not lucky.decisive
    lower = seed_check([_stats("x", [3.0, 3.1]), _stats("y", [5.0, 5.1])], "score", "min")
    assert lower.leader.trial_id == "x" and lower.decisive
    assert seed_check([_stats("x", [0.1, 0.3])], "score", "max").decisive  # nothing to beat


def test_run_seeds_trains_consecutive_seeds():
    seen = []
    stats = run_seeds({"x": Recipe(seed=5)}, 3, lambda t, r: seen.append((t, r.seed)) or {"score": r.seed})
    assert seen == [("x", 5), ("x", 6), ("x", 7)] and stats[0].mean("score") == 6


# -- the CLI's input errors: one line, exit 2, nothing written -----------------------------------


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_input_errors_exit_2_in_one_line(tmp_path, micro_checkpoints, capsys):
    run_dir, spec_path = _fake_sweep(tmp_path, micro_checkpoints)
    (tmp_path / "other").mkdir()
    other = write_spec(
        tmp_path / "other", micro_checkpoints, search={"guidance_scale": {"float": [1.0, 3.0]}}
    )
    unfinished = tmp_path / "runs" / "unfinished"
    unfinished.mkdir()
    (unfinished / "sweep.json").write_text((run_dir / "sweep.json").read_text())
    cases = [
        ((tmp_path / "nope",), "no such run folder"),
        ((unfinished, "--spec", spec_path), "trials.parquet, "),
        ((run_dir,), "no spec.yaml in the run folder; pass the sweep's spec with --spec PATH"),
        ((run_dir, "--spec", other), "not the spec the sweep in"),
        ((run_dir, "--spec", spec_path, "--top", "1"), "--top 1: Input should be greater than or equal to 2"),
        ((run_dir, "--spec", spec_path, "--pick", "kneee"), "--pick kneee: expected knee, best"),
        ((run_dir, "--spec", spec_path), "no MLflow store at sqlite:///"),  # the fake sweep never logged
    ]
    for argv, message in cases:
        code, out, err = _main(capsys, *argv)
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "mlflow.db").exists() and not (run_dir / "promoted").exists()


# -- end to end on the micro sweep ------------------------------------------------------------------


def _micro(spec_path: Path) -> tuple[Path, str, MlflowClient]:
    uri = f"sqlite:///{spec_path.parent / 'mlflow.db'}"
    return spec_path.parent / "runs" / "micro", uri, MlflowClient(uri)


def _versions(client: MlflowClient) -> list:
    return client.search_model_versions("name = 'micro-student'")


def _runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("micro")
    return client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.mark.slow
def test_promote_knee_registers_a_loadable_student(micro_sweep, capsys):
    run_dir, uri, client = _micro(micro_sweep)
    before = len(_versions(client))
    code, out, _ = _main(capsys, run_dir, "--spec", micro_sweep)  # the spec's promote: knee, 6 steps
    assert code == 0, out
    spec = load_spec(micro_sweep)
    trials = pl.read_parquet(run_dir / "trials.parquet")
    objectives = pareto.objectives_of(spec)
    knee = pareto.knee(
        pareto.pareto_front(trials.filter(pl.col("status") == "FINISHED"), objectives), objectives
    )
    # a new version, whose run carries the lineage
    versions = _versions(client)
    version = max(versions, key=lambda v: int(v.version))
    assert len(versions) == before + 1 and int(version.version) == before + 1
    run = client.get_run(version.run_id)
    tags = run.data.tags
    assert tags["role"] == "promotion" and tags["source_trial_id"] == knee["trial_id"]
    assert tags["sweep_id"] == json.loads((run_dir / "sweep.json").read_text())["sweep_id"]
    assert tags["promoted_from"] == tags["source_run_id"] == knee["mlflow_run_id"]
    assert "mlflow.parentRunId" not in tags and "trial_id" not in tags and run.info.status == "FINISHED"
    # params: the trial's recipe (as its own MLflow run logged it) with the full run's steps
    trial_params = {
        k: v for k, v in client.get_run(knee["mlflow_run_id"]).data.params.items() if "raw" not in k
    }
    assert run.data.params == trial_params | {"steps": "6"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [2, 4, 6]
    # the folder: complete, no temporary leftovers, and it loads and samples
    folder = run_dir / "promoted" / run.info.run_id
    assert sorted(p.name for p in (run_dir / "promoted").iterdir() if p.name.startswith(".")) == []
    card = json.loads((folder / CARD_FILE).read_text())
    recipe = Recipe.from_yaml(folder / "recipe.yaml")
    model = FlowModel.from_pretrained(folder, subfolder="transformer", torch_dtype=torch.float32).eval()
    world = shared_world(spec.world.name, spec.world.options)
    es = build_eval_set(world, EvalConfig(items=8))
    n = len(es)
    with torch.no_grad():
        images = student_generator(model, recipe.nfe)(
            es.eps, es.cond, lambda k: es.renoise(k, torch.arange(n))
        )
    assert images.shape == (n, 3, 16, 16) and torch.isfinite(images).all()
    # the saved student is the one scored in the card
    scores = evaluate(world, student_generator(model, recipe.nfe), EvalConfig(items=recipe.eval_items))
    assert scores["score"] == pytest.approx(card["scores"]["student"]["score"], abs=1e-6)
    # the registry's source is a copy of the folder
    registered = Path(
        mlflow.artifacts.download_artifacts(
            client.get_model_version_download_uri("micro-student", version.version)
        )
    )
    assert json.loads((registered / CARD_FILE).read_text()) == card
    assert f"registered micro-student version {version.version}" in out
    assert "teacher@50 (CFG 3)" in out and "teacher@4 (CFG 3)" in out and "speedup:" in out


@pytest.mark.slow
def test_cli_subprocess_adds_a_version(micro_sweep, tmp_path):
    run_dir, uri, client = _micro(micro_sweep)
    before = len(_versions(client))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.promote",
            str(run_dir),
            "--spec",
            str(micro_sweep),
            "--pick",
            "best:edit_score",
            "--steps",
            "2",
            "--threads",
            "1",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(_versions(client)) == before + 1
    assert f"registered micro-student version {before + 1}" in proc.stdout


@pytest.mark.slow
def test_seed_check_prints_mean_and_std_and_never_promotes_a_tie_silently(micro_sweep, capsys):
    run_dir, uri, client = _micro(micro_sweep)
    versions, runs = len(_versions(client)), len(_runs(client))
    code, out, err = _main(
        capsys, run_dir, "--spec", micro_sweep, "--seeds", "2", "--top", "2", "--steps", "2"
    )
    top = _ids(candidates(open_sweep(run_dir, micro_sweep), "knee")[:2])
    rows = [line for line in out.splitlines() if any(t in line for t in top) and "±" in line]
    assert len(rows) == 2 and all(line.count("±") == 3 for line in rows), out  # t2i, edit, score
    assert "mean ± std over 2 seeds" in out
    # the verdict and the exit status agree; without a decisive lead nothing is written
    if code == 3:
        assert "<= seed noise" in out and "not promoting" in out
        assert len(_versions(client)) == versions and len(_runs(client)) == runs
    else:
        assert code == 0 and "> seed noise" in out and len(_versions(client)) == versions + 1


@pytest.mark.slow
def test_interrupted_full_run_leaves_no_folder(micro_sweep, capsys, monkeypatch):
    run_dir, uri, client = _micro(micro_sweep)
    versions, runs = len(_versions(client)), {r.info.run_id for r in _runs(client)}
    folders = lambda: set((run_dir / "promoted").glob("*")) | set((run_dir / "promoted").glob(".*"))  # noqa: E731
    before = folders()

    def interrupt(self, step, metrics, save):
        raise KeyboardInterrupt  # as Ctrl-C at the first report

    monkeypatch.setattr(PromotionTracker, "on_report", interrupt)
    code, _, err = _main(capsys, run_dir, "--spec", micro_sweep, "--steps", "4")
    assert code == 130 and "interrupted: nothing promoted" in err
    new = [r for r in _runs(client) if r.info.run_id not in runs]
    assert len(new) == 1 and new[0].info.status == "KILLED" and len(_versions(client)) == versions
    assert folders() == before  # no student folder, no temporary one


@pytest.mark.slow
def test_unknown_trial_on_the_real_sweep_writes_nothing(micro_sweep, capsys):
    run_dir, uri, client = _micro(micro_sweep)
    runs = len(_runs(client))
    code, _, err = _main(capsys, run_dir, "--spec", micro_sweep, "--pick", "trial:nope")
    ids = pl.read_parquet(run_dir / "trials.parquet")["trial_id"].to_list()
    assert code == 2 and err.startswith("error: --pick trial:nope: no such trial")
    assert all(t in err for t in ids) and len(_runs(client)) == runs
