"""Tests of trainers/teachers.py: the λ schedule, CFG mixing, and which teacher sees which item.

(Cond and the per-kind velocity dispatch are tested in test_cond.py.)

Teachers here are tiny instrumented flow models with the FlowModel call signature: each item's
id is written into its text embedding, so a model can record the items it was called on.
Run: .venv/bin/python -m pytest tests/test_teachers.py -q
"""

import pytest
import torch
from cond_toys import SHAPE, RecordingFlow, make_cond

from trainers.cond import EDIT
from trainers.teachers import Teacher, TeacherSchedule, TeacherSet, real_x0, teacher_schedule

torch.set_num_threads(1)

@pytest.fixture
def teachers() -> TeacherSet:
    return TeacherSet.of(
        Teacher("base", RecordingFlow(0.0)),
        Teacher("text", RecordingFlow(100.0), categories=frozenset({"text"})),
    )


def test_switch_schedule_weights(teachers):
    lam = teacher_schedule(teachers, nfe=4, switch_step=2)
    assert [lam(k, "text") for k in range(4)] == [{"base": 1.0, "text": 0.0}] * 2 + [
        {"base": 0.0, "text": 1.0}
    ] * 2
    assert all(lam(k, "landscape") == {"base": 1.0, "text": 0.0} for k in range(4))
    assert all(lam(k, EDIT, is_edit=True)["base"] == 1.0 for k in range(4))  # edits of no category: base
    # an edit item has its source image's category: a glyph edit is a text item, a mirror a landscape one
    assert lam(3, "text", is_edit=True) == {"base": 0.0, "text": 1.0}
    assert lam(3, "landscape", is_edit=True) == {"base": 1.0, "text": 0.0}
    base_only = teacher_schedule(teachers, nfe=4, switch_step=4)
    assert all(base_only(k, "text")["base"] == 1.0 for k in range(4))
    from_start = teacher_schedule(teachers, nfe=4, switch_step=0)
    assert all(from_start(k, "text")["text"] == 1.0 for k in range(4))
    blend = teacher_schedule(teachers, nfe=4, switch_step=1, specialist_weight=0.7)
    assert blend(0, "text") == {"base": 1.0, "text": 0.0}
    assert blend(3, "text") == pytest.approx({"base": 0.3, "text": 0.7})
    m = blend.matrix(torch.tensor([0, 3, 3]), ["text", "text", "portrait"])
    assert torch.allclose(m, torch.tensor([[1.0, 0.0], [0.3, 0.7], [1.0, 0.0]]))


def test_edit_specialist_and_explicit_table():
    ts = TeacherSet.of(
        Teacher("base", RecordingFlow(0.0)),
        Teacher("text", RecordingFlow(1.0), categories=frozenset({"text", EDIT})),
    )
    lam = teacher_schedule(ts, nfe=4, switch_step=3)
    assert lam(3, EDIT, is_edit=True)["text"] == 1.0 and lam(2, EDIT, is_edit=True)["base"] == 1.0
    # "edit" covers every edit item whatever its source category, and no T2I item
    assert lam(3, "landscape", is_edit=True)["text"] == 1.0 and lam(3, "landscape")["base"] == 1.0
    m = lam.matrix(torch.tensor([3, 3]), ["portrait", "portrait"], torch.tensor([True, False]))
    assert torch.equal(m, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    # an explicit table overrides the switch; an uncovered category's weight goes to base
    table = teacher_schedule(
        ts, nfe=2, switch_step=0, teacher_weights={"base": [1.0, 0.5], "text": [0.0, 0.5]}
    )
    assert table(1, "text") == {"base": 0.5, "text": 0.5}
    assert table(1, "landscape") == {"base": 1.0, "text": 0.0}


def test_schedule_errors_name_the_field(teachers):
    with pytest.raises(ValueError, match="teacher_switch_step"):
        teacher_schedule(teachers, nfe=4, switch_step=5)
    with pytest.raises(ValueError, match="specialist 'portrait'"):
        teacher_schedule(teachers, nfe=4, switch_step=2, specialist="portrait")
    with pytest.raises(ValueError, match="teacher_weights.*'judge'"):
        teacher_schedule(teachers, nfe=2, switch_step=2, teacher_weights={"judge": [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"teacher_weights\['base'\]: need 2"):
        teacher_schedule(teachers, nfe=2, switch_step=2, teacher_weights={"base": [1.0]})
    with pytest.raises(ValueError, match="weight 0 at student step 1"):
        teacher_schedule(teachers, nfe=2, switch_step=2, teacher_weights={"base": [1.0, 0.0]})
    with pytest.raises(ValueError, match="'base'"):
        TeacherSet.of(Teacher("text", RecordingFlow(0.0)))
    # a base-only schedule does not need the specialist to exist
    assert teacher_schedule(teachers, nfe=4, switch_step=4, specialist="portrait")(3, "text")["base"] == 1.0


def test_real_score_comes_from_the_scheduled_teacher_only(teachers):
    """k* = 2, nfe 4: text items at step 3 → specialist only; at step 1 → base only; others → base."""
    lam = teacher_schedule(teachers, nfe=4, switch_step=2)
    categories = ["text", "text", "landscape", "portrait", "landscape", EDIT]
    ks = torch.tensor([3, 1, 3, 1, 0, 3])
    cond = make_cond(categories, edit=[False] * 5 + [True])
    z_t, t = torch.randn(6, *SHAPE), torch.full((6,), 0.5)
    x0 = real_x0(teachers, lam.matrix(ks, categories), z_t, t, cond, guidance_scale=1.0)
    assert teachers["text"].model.items() == {0}
    assert teachers["base"].model.items() == {1, 2, 3, 4, 5}
    # the edit item went to the model in its own call, with its source image
    assert ([5], True) in teachers["base"].model.calls
    assert torch.allclose(x0[0], torch.full(SHAPE, 100.5)) and torch.allclose(x0[1], torch.full(SHAPE, 0.5))
    assert torch.allclose(x0[5], torch.full(SHAPE, 10.5))


def test_cfg_and_blend_in_x0_space(teachers):
    """x0 is affine in v, so CFG in v is CFG in x0 and a λ-blend of velocities is the λ-blend of x0s."""
    lam = teacher_schedule(teachers, nfe=2, switch_step=1, specialist_weight=0.25)
    cond = make_cond(["text", "portrait"], signal=0.5)
    z_t, t = torch.randn(2, *SHAPE), torch.tensor([0.3, 0.8])
    x0 = real_x0(
        teachers, lam.matrix(torch.tensor([1, 1]), cond.categories), z_t, t, cond, guidance_scale=3.0
    )
    # x0_uncond = offset, x0_cond = offset + 0.5 → CFG 3: offset + 1.5
    assert torch.allclose(x0[0], torch.full(SHAPE, 0.75 * 1.5 + 0.25 * 101.5), atol=1e-4)
    assert torch.allclose(x0[1], torch.full(SHAPE, 1.5), atol=1e-4)
    own_scale = Teacher("base", RecordingFlow(0.0), guidance_scale=1.0)
    assert torch.allclose(
        own_scale.x0(z_t, t, cond, guidance_scale=3.0), torch.full((2, *SHAPE), 0.5), atol=1e-5
    )


def test_teachers_are_frozen(teachers):
    assert not any(p.requires_grad for t in teachers.values() for p in t.model.parameters())
    assert not teachers["base"].model.training
    assert teachers.names == ("base", "text")


def test_schedule_from_recipe(teachers):
    recipe = pytest.importorskip("trainers.recipe")
    lam = TeacherSchedule.from_recipe(recipe.Recipe(teacher_switch_step=3, specialist_weight=0.5), teachers)
    assert lam(2, "text")["base"] == 1.0 and lam(3, "text") == {"base": 0.5, "text": 0.5}
    base_only = TeacherSchedule.from_recipe(recipe.Recipe(), teachers)  # teacher_switch_step None → nfe
    assert all(base_only(k, "text")["base"] == 1.0 for k in range(4))
    table = TeacherSchedule.from_recipe(
        recipe.Recipe(nfe=2, teacher_weights={"base": [1.0, 0.25], "text": [0.0, 0.75]}), teachers
    )
    assert table(1, "text") == {"base": 0.25, "text": 0.75}
