"""Tests of trainers/dmd_loss.py: the DMD2 maths against hand computations.

Run: .venv/bin/python -m pytest tests/test_dmd_loss.py -q
"""

import pytest
import torch
from dmd_toys import SHAPE, ConstantX0, ToyFlow, make_cond

from trainers import flow
from trainers.divergence import DivergedError, FiniteChecks
from trainers.dmd_loss import (
    distribution_matching_grad,
    distribution_matching_loss,
    fake_score_loss,
    generator_loss,
)
from trainers.teachers import Teacher, TeacherSet, teacher_schedule

torch.set_num_threads(1)


def test_dm_grad_and_generator_gradient_by_hand():
    x = torch.tensor([[[[1.0, 3.0]]], [[[0.0, -2.0]]]], requires_grad=True)  # 2 samples of 2 pixels
    x0_real = torch.tensor([[[[0.0, 1.0]]], [[[1.0, 0.0]]]])
    x0_fake = torch.tensor([[[[2.0, 0.0]]], [[[1.0, 3.0]]]])
    # normalisers: mean |x − x0_real| = (1 + 2)/2 = 1.5 and (1 + 2)/2 = 1.5
    want = torch.tensor([[[[2.0, -1.0]]], [[[0.0, 3.0]]]]) / 1.5
    grad, logs = distribution_matching_grad(x.detach(), x0_real, x0_fake)
    assert torch.allclose(grad, want)
    assert float(logs["dm/normaliser"]) == pytest.approx(1.5)
    assert float(logs["dm/grad_norm"]) == pytest.approx(want.norm().item())
    generator_loss(x, grad).backward()
    # d/dx 0.5·mean((x − stopgrad(x − g))²) = g / numel: a step against it moves x towards x0_real − x0_fake
    assert torch.allclose(x.grad, want / x.numel())


def test_dm_grad_zeroes_nans():
    x = torch.zeros(1, 1, 1, 2)
    grad, _ = distribution_matching_grad(x, torch.zeros_like(x), torch.ones_like(x))  # normaliser 0 → inf
    assert torch.isfinite(grad).all()


def known_x0_teachers(text_value: float = 2.0) -> TeacherSet:
    return TeacherSet.of(
        Teacher("base", ConstantX0(torch.full(SHAPE, 0.5))),
        Teacher("text", ConstantX0(torch.full(SHAPE, text_value)), categories=frozenset({"text"})),
    )


def test_distribution_matching_loss_on_known_x0_models():
    """Teachers and fake score predict known constants, so the generator gradient is known exactly."""
    a, b, a_text = torch.full(SHAPE, 0.5), torch.full(SHAPE, -0.25), torch.full(SHAPE, 2.0)
    teachers = known_x0_teachers()
    lam = teacher_schedule(teachers, nfe=4, switch_step=2)
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    cond = make_cond(3, categories=["text", "text", "portrait"])
    ks = torch.tensor([3, 1, 3])
    checks = FiniteChecks(step=0)
    loss, _ = distribution_matching_loss(
        x, ks, cond, teachers=teachers, schedule=lam, fake=ConstantX0(b), guidance_scale=3.0, checks=checks
    )
    checks.verify()
    loss.backward()
    real = torch.stack([a_text, a, a])  # item 0: text at step 3 → specialist; the others → base
    normaliser = (x.detach() - real).abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(x.grad, (b - real) / normaliser / x.numel(), atol=1e-6)


def test_a_broken_teacher_is_a_divergence_not_a_zero_loss():
    teachers = known_x0_teachers(text_value=float("nan"))
    lam = teacher_schedule(teachers, nfe=4, switch_step=0)
    x = torch.randn(2, *SHAPE, requires_grad=True)
    checks = FiniteChecks(step=7)
    loss, _ = distribution_matching_loss(
        x, torch.tensor([1, 2]), make_cond(2), teachers=teachers, schedule=lam,
        fake=ConstantX0(torch.zeros(SHAPE)), guidance_scale=1.0, checks=checks,
    )
    assert torch.isfinite(loss)  # nan_to_num hides it from the loss ...
    with pytest.raises(DivergedError, match=r"generator step 7: real-score x0 \(teachers\) is not finite"):
        checks.verify()  # ... the queued check does not


def test_fake_score_loss_is_flow_matching_on_detached_samples():
    fake = ToyFlow()
    x = torch.randn(4, *SHAPE, requires_grad=True)
    cond = make_cond(4)
    loss = fake_score_loss(fake, x, cond, torch.Generator().manual_seed(0))
    loss.backward()
    assert x.grad is None and fake.mix.weight.grad is not None
    g = torch.Generator().manual_seed(0)
    t = 0.02 + 0.96 * torch.rand(4, generator=g)
    eps = torch.randn(x.shape, generator=g)
    z_t = flow.interpolate(x.detach(), eps, t)
    want = ((fake(z_t, t, cond.text, cond.text_mask) - (eps - x.detach())) ** 2).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
