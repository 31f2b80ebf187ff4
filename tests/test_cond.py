"""Tests of trainers/cond.py: Cond batches, the per-kind velocity dispatch and CFG.

A recording model with the FlowModel call signature stands in for a transformer: item i carries
its id in ``text[:, 0, 0]``, so the model can say which items each call saw.
Run: .venv/bin/python -m pytest tests/test_cond.py -q
"""

import pytest
import torch
from cond_toys import SHAPE, RecordingFlow, make_cond

from trainers import flow
from trainers.cond import EDIT, Cond, guided_velocity, velocity

torch.set_num_threads(1)

def x0_of(v: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return flow.x0_from_v(z_t, t, v)


def test_velocity_splits_mixed_batches_and_keeps_order():
    model = RecordingFlow()
    cond = make_cond(["text", EDIT, "portrait", EDIT], edit=[False, True, False, True])
    z_t, t = torch.randn(4, *SHAPE), torch.full((4,), 0.5)
    x0 = x0_of(velocity(model, z_t, t, cond), z_t, t)
    assert model.calls == [([0, 2], False), ([1, 3], True)]  # one call per kind
    assert torch.allclose(x0[:, 0, 0, 0], torch.tensor([0.5, 10.5, 0.5, 10.5]))


def test_velocity_makes_one_call_for_a_single_kind():
    model = RecordingFlow()
    z_t, t = torch.randn(2, *SHAPE), torch.full((2,), 0.5)
    velocity(model, z_t, t, make_cond(["text", "portrait"]))
    velocity(model, z_t, t, make_cond([EDIT, EDIT], edit=[True, True]))
    velocity(model, z_t, t, make_cond(["text", "text"], edit=[False, False]))
    assert model.calls == [([0, 1], False), ([0, 1], True), ([0, 1], False)]


def test_unconditional_velocity_drops_the_prompt_but_keeps_the_source():
    model = RecordingFlow()
    cond = make_cond(["text", EDIT], edit=[False, True])
    z_t, t = torch.randn(2, *SHAPE), torch.full((2,), 0.25)
    x0 = x0_of(velocity(model, z_t, t, cond, unconditional=True), z_t, t)
    assert torch.allclose(x0[:, 0, 0, 0], torch.tensor([0.0, 10.0]), atol=1e-5)


def test_guided_velocity_is_cfg_and_scale_one_is_one_call():
    model = RecordingFlow()
    cond = make_cond(["text", EDIT], edit=[False, True], signal=0.5)
    z_t, t = torch.randn(2, *SHAPE), torch.tensor([0.3, 0.8])
    x0 = x0_of(guided_velocity(model, z_t, t, cond, 3.0), z_t, t)
    # x0_uncond = source, x0_cond = source + 0.5: CFG 3 gives source + 1.5 (x0 is affine in v)
    assert torch.allclose(x0[:, 0, 0, 0], torch.tensor([1.5, 11.5]), atol=1e-4)
    model.calls.clear()
    plain = guided_velocity(model, z_t, t, cond, 1.0)
    assert len(model.calls) == 2  # T2I + edit, conditional only
    torch.testing.assert_close(plain, velocity(model, z_t, t, cond))


def test_select_concat_and_to():
    t2i = make_cond(["text", "portrait"])
    edits = make_cond([EDIT], edit=[True])
    joined = Cond.concat([t2i, edits, t2i.select(torch.tensor([], dtype=torch.long))])
    assert len(joined) == 3 and joined.categories == ("text", "portrait", EDIT)
    assert joined.is_edit.tolist() == [False, False, True]
    assert torch.equal(joined.source[:2], torch.zeros(2, *SHAPE))  # T2I rows get a zero source
    picked = joined.select(torch.tensor([2, 0]))
    assert picked.categories == (EDIT, "text") and picked.is_edit.tolist() == [True, False]
    assert torch.equal(picked.text, joined.text[[2, 0]])
    moved = joined.to("cpu")
    assert moved.categories == joined.categories and torch.equal(moved.source, joined.source)
    assert Cond.concat([t2i]).source is None


def test_cond_checks_its_shapes():
    c = make_cond(["text", "portrait"])
    with pytest.raises(AssertionError, match="1 categories for 2 items"):
        Cond(c.text, c.text_mask, c.null_text, c.null_mask, ("text",))
    with pytest.raises(AssertionError, match="source and is_edit"):
        Cond(c.text, c.text_mask, c.null_text, c.null_mask, c.categories, source=torch.zeros(2, *SHAPE))
