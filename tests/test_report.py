"""Tests of trainers/tinyworld/report.py: the teacher grid, the per-NFE score table, the CLI's outputs.

Run: .venv/bin/python -m pytest tests/test_report.py -q   (micro world, not the shipped teachers; the CLI test is slow)
"""

from __future__ import annotations

import json

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


@pytest.mark.slow
def test_main_writes_report_json_and_leaves_cards_alone_with_no_cards(micro_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "TinyWorld", lambda: TinyWorld(checkpoints=micro_checkpoints, **REPORT_WORLD))
    cards = {n: (micro_checkpoints / n / "card.json").read_text() for n in ("base", "text")}
    report.main(["--out", str(tmp_path), "--items", "8", "--seeds", "1", "--threads", "1", "--no-cards"])
    out = json.loads((tmp_path / "report.json").read_text())
    assert set(out["teacher"]) == {str(n) for n in report.NFES} and set(out["text_category@50"]) == {"base", "text"}
    assert (tmp_path / "tinyworld_grid.png").is_file()
    assert cards == {n: (micro_checkpoints / n / "card.json").read_text() for n in ("base", "text")}


def test_cards_get_the_teacher_at_50_scores(micro_checkpoints, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    for name in ("base", "text"):  # a copy: the session's micro checkpoints stay as built
        (ckpt / name).mkdir(parents=True)
        (ckpt / name / "card.json").write_text((micro_checkpoints / name / "card.json").read_text())
    world = TinyWorld(checkpoints=ckpt)
    args = type("Args", (), {"guidance_scale": 2.0, "items": 8, "seeds": 1})()
    report._record_in_cards(world, {"score": (0.51234, 0.1)}, {"base": 0.2, "text": 0.7}, args)
    base, text = (json.loads((ckpt / n / "card.json").read_text())["scores@50"] for n in ("base", "text"))
    assert base == {"guidance_scale": 2.0, "items": 8, "seeds": 1, "score": 0.5123, "t2i_score/text": 0.2}
    assert text == {"guidance_scale": 2.0, "items": 8, "seeds": 1, "t2i_score/text": 0.7}
