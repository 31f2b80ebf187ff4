"""Tests of trainers/tinyworld/report.py: the teacher grid, the per-NFE score table, the CLI's outputs (into its --out folder only).

Run: .venv/bin/python -m pytest tests/test_report.py -q   (micro world, not the shipped teachers; the CLI test is slow)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from trainers.tinyworld import report
from trainers.tinyworld.pretrain import MICRO_WORLD
from trainers.tinyworld.world import TinyWorld

# the report's grid picks its examples from a 256-item benchmark: 128 held-out prompts and 128 edits
REPORT_WORLD = MICRO_WORLD | {"heldout_prompts": 129, "heldout_edits": 128}


@pytest.fixture()
def report_world(micro_checkpoints):
    return TinyWorld(checkpoints=micro_checkpoints, **REPORT_WORLD)


def test_grid_has_a_row_per_category_and_edit_type(report_world, tmp_path):
    model = report_world.load_teachers()["base"].model
    path = report.sample_grid(report_world, model, guidance_scale=3.0, out=tmp_path)
    assert path == tmp_path / "tinyworld_grid.png"
    rows, cols = len(report_world.categories) + len(report_world.edit_types), 2 + len(report.NFES)
    # the figure is sized 1.3 inch per cell plus 2.2 inch of row labels, saved at 110 dpi
    assert Image.open(path).size == (round((1.3 * cols + 2.2) * 110), round(1.3 * rows * 110))


def test_score_table_has_mean_and_std_per_nfe_over_seeds(micro_world):
    model = micro_world.load_teachers()["base"].model
    table = report.score_table(micro_world, model, guidance_scale=3.0, items=8, seeds=2)
    assert list(table) == list(report.NFES)
    for scores in table.values():
        assert set(report.COLUMNS) <= set(scores)
        assert all(std >= 0 for _, std in scores.values())
        assert all(0 <= scores[k][0] <= 1 for k in ("score", "t2i_score", "edit_score", "adherence", "purity"))
    assert table[50]["score"][1] > 0  # two noise seeds: two different evaluations


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest): content, not mtime."""
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


@pytest.mark.slow
def test_main_writes_into_its_out_folder_only(micro_checkpoints, tmp_path, monkeypatch):
    ckpt, out, cwd = tmp_path / "ckpt", tmp_path / "out", tmp_path / "cwd"
    shutil.copytree(micro_checkpoints, ckpt)  # a copy: the session's micro checkpoints stay as built
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a write to a relative path would land here
    monkeypatch.setattr(report, "TinyWorld", lambda: TinyWorld(checkpoints=ckpt, **REPORT_WORLD))
    before = _hashes(tmp_path)
    report.main(["--out", str(out), "--items", "8", "--seeds", "1", "--threads", "1"])
    after = _hashes(tmp_path)
    # nothing outside --out was added, removed or rewritten: not the cards, not the weights
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "tinyworld_grid.png"]
    data = json.loads((out / "report.json").read_text())
    assert set(data["teacher"]) == {str(n) for n in report.NFES}
    assert set(data["text_category@50"]) == {"base", "text"}
    # the teacher@50 scores that used to go into the cards are in the report, in the cards' format
    assert data["scores@50"] == report.card_scores(
        {k: tuple(v) for k, v in data["teacher"]["50"].items()}, data["text_category@50"], 3.0, 8, 1
    )


def test_card_scores_have_the_cards_format():
    scores = report.card_scores({"score": (0.51234, 0.1)}, {"base": 0.2, "text": 0.7}, 2.0, 8, 1)
    assert scores == {
        "base": {"guidance_scale": 2.0, "items": 8, "seeds": 1, "score": 0.5123, "t2i_score/text": 0.2},
        "text": {"guidance_scale": 2.0, "items": 8, "seeds": 1, "t2i_score/text": 0.7},
    }


def test_shipped_report_holds_the_scores_of_its_run_in_the_cards_format():
    data = json.loads((Path(report.__file__).parents[2] / "docs" / "tinyworld" / "report.json").read_text())
    at50 = {k: tuple(v) for k, v in data["teacher"]["50"].items()}
    assert data["scores@50"] == report.card_scores(
        at50, data["text_category@50"], data["guidance_scale"], data["items"], data["seeds"]
    )
