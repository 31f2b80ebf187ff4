"""Teacher pretraining and the TinyWorld facade, on the micro world (seconds).

Run: .venv/bin/python -m pytest tests/test_pretrain.py
"""

from __future__ import annotations

import json

import torch

from trainers import flow
from trainers.cond import EDIT, velocity
from trainers.models import FlowModel
from trainers.tinyworld.pretrain import TeacherConfig, TeacherData, _drop_text, train_teacher


def test_micro_pretraining_writes_loadable_teachers_with_cards(micro_checkpoints):
    for name in ("base", "text"):
        card = json.loads((micro_checkpoints / name / "card.json").read_text())
        assert card["name"] == name and card["steps_done"] == card["config"]["steps"]
        assert isinstance(card["wall_time_s"], float)  # recorded; how long it took depends on the machine
        model = FlowModel.from_pretrained(micro_checkpoints / name, torch_dtype=torch.float32)
        assert model.dtype == torch.float32
    assert (micro_checkpoints / "judge" / "model.safetensors").is_file()


def test_training_lowers_the_flow_matching_loss(micro_world):
    torch.manual_seed(0)
    config = TeacherConfig(
        size="micro", steps=30, batch_size=16, warmup_steps=1, lr=2e-3, ema_decay=0.0, seed=1
    )
    model, record = train_teacher(micro_world, config)
    data = TeacherData(micro_world, config)
    x, cond = data.batch()
    gen = torch.Generator().manual_seed(0)
    eps, t = torch.randn(x.shape, generator=gen), flow.sample_train_t(len(x), generator=gen)
    untrained = FlowModel.build("micro")
    with torch.no_grad():
        losses = [
            float(flow.flow_matching_loss(lambda z, tt, m=m: velocity(m, z, tt, cond), x, eps, t))
            for m in (untrained, model)
        ]
    assert losses[1] < 0.8 * losses[0], losses


def test_batches_follow_the_config(micro_world):
    config = TeacherConfig(size="micro", batch_size=20, edit_fraction=0.4)
    x, cond = TeacherData(micro_world, config).batch()
    assert x.shape == (20, 3, 16, 16) and x.abs().max() <= 1
    assert int(cond.is_edit.sum()) == 8 and EDIT not in cond.categories  # edits: their sources' categories
    text_only = TeacherConfig(size="micro", batch_size=12, edit_fraction=0.0, categories=("text",))
    _, cond = TeacherData(micro_world, text_only).batch()
    assert set(cond.categories) == {"text"} and cond.source is None
    # a text specialist learns text prompts and the edits of text images (glyph edits among them)
    text_items = TeacherConfig(size="micro", batch_size=20, edit_fraction=0.5, categories=("text",))
    data = TeacherData(micro_world, text_items)
    _, cond = data.batch()
    assert set(cond.categories) == {"text"} and int(cond.is_edit.sum()) == 10
    assert {r["category"] for r in data.edits} == {"text"} and "change_glyph" in {r["edit_type"] for r in data.edits}


def test_condition_dropout_uses_the_empty_prompt(micro_world):
    _, cond = TeacherData(micro_world, TeacherConfig(size="micro", batch_size=64)).batch()
    dropped = _drop_text(cond, 0.5, torch.Generator().manual_seed(0))
    is_null = (dropped.text == cond.null_text).flatten(1).all(1)
    assert 10 < int(is_null.sum()) < 54  # about half, never all or none
    assert torch.equal(dropped.source, cond.source)  # edits keep their source image (CFG on the instruction)


def test_world_pools_and_conditions(micro_world):
    prompts, edits = micro_world.prompt_pool("train"), micro_world.edit_pool("heldout")
    assert prompts.num_rows == 96 and set(prompts.column("split").to_pylist()) == {"train"}
    rows = prompts.slice(0, 5).to_pylist()
    cond = micro_world.t2i_cond(rows)
    assert cond.text.shape == (5, micro_world.encoder.max_length, 384) and cond.source is None
    edit_rows = edits.slice(0, 3).to_pylist()
    econd = micro_world.edit_cond(edit_rows)
    assert torch.equal(econd.source, micro_world.render_edits(edit_rows, "source"))
    # source and target share the render seed: only the edited attributes differ
    assert not torch.equal(econd.source, micro_world.render_edits(edit_rows, "target"))
    teachers = micro_world.load_teachers()
    assert set(teachers) == {"base", "text"} and teachers["text"].covers("text")
    assert not teachers["text"].covers("landscape")
    # an edit item carries its source image's category, so a glyph edit reaches the text specialist
    assert econd.categories == tuple(r["category"] for r in edit_rows) and bool(econd.is_edit.all())
    glyph = next(r for r in edits.to_pylist() if r["edit_type"] == "change_glyph")
    assert teachers["text"].covers(*micro_world.edit_cond([glyph]).categories, is_edit=True)
