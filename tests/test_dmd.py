"""Tests of trainers/dmd.py: DMD2 maths against hand computations, backward simulation, TTUR, guards.

Toy flow models with the FlowModel call signature stand in for the tiny world's transformers.
Run: .venv/bin/python -m pytest tests/test_dmd.py -q
"""

import copy

import pytest
import torch
from torch import nn

from trainers import flow
from trainers.dmd import (
    DivergedError,
    DMDConfig,
    DMDState,
    backward_simulate,
    distribution_matching_grad,
    distribution_matching_loss,
    dmd_cycle,
    fake_score_loss,
    generator_loss,
)
from trainers.teachers import Cond, Teacher, TeacherSet, teacher_schedule

torch.set_num_threads(1)

SHAPE = (3, 4, 4)


class ConstantX0(nn.Module):
    """A flow model whose x0 prediction is the constant ``value`` (v = (z_t − value) / t)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = nn.Parameter(value.clone())

    def forward(self, z_t, t, text, text_mask, source=None):
        return (z_t - self.value) / t.reshape(-1, 1, 1, 1)


class ToyFlow(nn.Module):
    """A trainable velocity model: 1×1 conv of z_t plus text and time embeddings (and the source)."""

    def __init__(self, text_dim: int = 4):
        super().__init__()
        self.mix = nn.Conv2d(3, 3, 1)
        self.text = nn.Linear(text_dim, 3)
        self.time = nn.Linear(1, 3)
        self.src = nn.Conv2d(3, 3, 1)
        self.t_seen: list[tuple[list[float], bool]] = []  # (t values, grad enabled) per call

    def forward(self, z_t, t, text, text_mask, source=None):
        self.t_seen.append((t.tolist(), torch.is_grad_enabled()))
        pooled = (text * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True).clamp(min=1)
        h = self.mix(z_t) + (self.text(pooled) + self.time(t[:, None]))[:, :, None, None]
        return h if source is None else h + self.src(source)


def make_cond(n: int, categories=None, edits: int = 0, shape=SHAPE) -> Cond:
    g = torch.Generator().manual_seed(n)
    text = torch.randn(n, 3, 4, generator=g)
    mask = torch.ones(n, 3, dtype=torch.long)
    cats = tuple(categories or ["text", "landscape"] * (n // 2) + ["portrait"] * (n % 2))
    is_edit = torch.arange(n) >= n - edits if edits else None
    source = torch.randn(n, *shape, generator=g) if edits else None
    return Cond(text, mask, torch.zeros_like(text), mask.clone(), cats, source, is_edit)


def toy_state(critic_updates=2, seed=0, **config) -> DMDState:
    torch.manual_seed(0)
    teachers = TeacherSet.of(
        Teacher("base", ToyFlow()), Teacher("text", ToyFlow(), categories=frozenset({"text"}))
    )
    cfg = DMDConfig(nfe=4, critic_updates=critic_updates, image_shape=SHAPE, warmup_steps=2, **config)
    return DMDState.from_base(teachers, teacher_schedule(teachers, nfe=4, switch_step=2), cfg, seed=seed)


# --- the maths --------------------------------------------------------------------------------


def test_dm_grad_and_generator_gradient_by_hand():
    x = torch.tensor([[[[1.0, 3.0]]], [[[0.0, -2.0]]]], requires_grad=True)  # 2 samples of 2 pixels
    x0_real = torch.tensor([[[[0.0, 1.0]]], [[[1.0, 0.0]]]])
    x0_fake = torch.tensor([[[[2.0, 0.0]]], [[[1.0, 3.0]]]])
    # normalisers: mean |x − x0_real| = (1 + 2)/2 = 1.5 and (1 + 2)/2 = 1.5
    want = torch.tensor([[[[2.0, -1.0]]], [[[0.0, 3.0]]]]) / 1.5
    grad, logs = distribution_matching_grad(x.detach(), x0_real, x0_fake)
    assert torch.allclose(grad, want)
    assert logs["dm/normaliser"] == pytest.approx(1.5)
    generator_loss(x, grad).backward()
    # d/dx 0.5·mean((x − stopgrad(x − g))²) = g / numel: a step against it moves x towards x0_real − x0_fake
    assert torch.allclose(x.grad, want / x.numel())


def test_dm_grad_zeroes_nans():
    x = torch.zeros(1, 1, 1, 2)
    grad, _ = distribution_matching_grad(x, torch.zeros_like(x), torch.ones_like(x))  # normaliser 0 → inf
    assert torch.isfinite(grad).all()


def test_distribution_matching_loss_on_known_x0_models():
    """Teachers and fake score predict known constants, so the generator gradient is known exactly."""
    a, b = torch.full(SHAPE, 0.5), torch.full(SHAPE, -0.25)
    a_text = torch.full(SHAPE, 2.0)
    teachers = TeacherSet.of(
        Teacher("base", ConstantX0(a)), Teacher("text", ConstantX0(a_text), categories=frozenset({"text"}))
    )
    lam = teacher_schedule(teachers, nfe=4, switch_step=2)
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    cond = make_cond(3, categories=["text", "text", "portrait"])
    ks = torch.tensor([3, 1, 3])
    loss, _ = distribution_matching_loss(
        x, ks, cond, teachers=teachers, schedule=lam, fake=ConstantX0(b), guidance_scale=3.0
    )
    loss.backward()
    real = torch.stack([a_text, a, a])  # item 0: text at step 3 → specialist; the others → base
    normaliser = (x.detach() - real).abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(x.grad, (b - real) / normaliser / x.numel(), atol=1e-6)


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


# --- backward simulation -----------------------------------------------------------------------


def test_backward_simulation_runs_each_item_to_its_own_step():
    student = ToyFlow()
    ts = flow.timesteps(4)
    ks = torch.tensor([0, 3, 1, 3])
    x = backward_simulate(student, make_cond(4, edits=1), torch.randn(4, *SHAPE), ts, ks)
    no_grad = [t for t, grad in student.t_seen if not grad]
    with_grad = [t for t, grad in student.t_seen if grad]
    # step j runs only the items with k > j: [1, 2, 3] at j = 0 (split T2I / edit), [1, 3] at 1, [1, 3] at 2
    assert sorted(v for call in no_grad for v in call) == sorted([1.0] * 3 + [0.75] * 2 + [0.5] * 2)
    assert sorted(v for call in with_grad for v in call) == sorted([ts[0], ts[3], ts[1], ts[3]])
    assert x.requires_grad  # one step with gradients
    x.sum().backward()
    assert student.mix.weight.grad is not None


def test_backward_simulation_matches_student_sampler_at_the_last_step():
    student = ToyFlow()
    cond, eps, ts = make_cond(2), torch.randn(2, *SHAPE), flow.timesteps(4)
    noise = torch.randn(3, 2, *SHAPE, generator=torch.Generator().manual_seed(3))
    want = flow.student_sample(
        lambda z, t: student(z, t, cond.text, cond.text_mask), eps, ts, noise=lambda k: noise[k]
    )
    got = backward_simulate(student, cond, eps, ts, torch.tensor([3, 3]), torch.Generator().manual_seed(3))
    # backward_simulate draws its re-noising noise for the active items from the generator in the same order
    assert torch.allclose(got, want, atol=1e-5)


# --- the TTUR cycle ---------------------------------------------------------------------------


def count_steps(opt: torch.optim.Optimizer) -> list[int]:
    counter = [0]
    opt.register_step_post_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
    return counter


def test_ttur_does_critic_updates_fake_steps_per_generator_step():
    state = toy_state(critic_updates=3, grad_accum=2)
    fake_steps, student_steps = count_steps(state.opt_fake), count_steps(state.opt_student)
    draws = []
    logs = {}
    for _ in range(2):
        logs = dmd_cycle(state, lambda: draws.append(1) or make_cond(4, edits=1))
    assert fake_steps[0] == 6 and student_steps[0] == 2 and state.step == 2
    assert len(draws) == 2 * (3 + 1) * 2  # every update draws its own batches (grad_accum 2)
    for key in (
        "loss/generator",
        "loss/fake",
        "grad_norm/generator",
        "grad_norm/fake",
        "dm/grad_abs_mean",
        "time/cycle_s",
        "lr/generator",
    ):
        assert key in logs and logs[key] == logs[key], key  # present and not NaN


def test_warmup_clipping_and_ema():
    state = toy_state(critic_updates=1, max_grad_norm=1e-3, ema_decay=0.5, lr_generator=1e-2)
    seen = []
    state.opt_student.register_step_pre_hook(
        lambda *_: seen.append(
            torch.nn.utils.get_total_norm(
                [p.grad for p in state.student.parameters() if p.grad is not None]
            ).item()
        )
    )
    before = copy.deepcopy(state.student)
    logs = dmd_cycle(state, lambda: make_cond(4))
    assert logs["lr/generator"] == pytest.approx(0.5e-2)  # warm-up 2 steps: first step at half lr
    assert logs["grad_norm/generator"] > 1e-3  # reported before clipping ...
    assert seen[0] <= 1e-3 * (1 + 1e-4)  # ... and clipped before the step
    for pe, p0, p in zip(
        state.ema.parameters(), before.parameters(), state.student.parameters(), strict=True
    ):
        assert torch.allclose(pe, 0.5 * p0 + 0.5 * p)
    assert state.lr_student.get_last_lr()[0] == pytest.approx(1e-2)


def test_cycles_are_reproducible_and_resumable():
    a, b = toy_state(seed=5), toy_state(seed=5)
    assert (
        dmd_cycle(a, lambda: make_cond(4))["loss/generator"]
        == dmd_cycle(b, lambda: make_cond(4))["loss/generator"]
    )
    saved = copy.deepcopy(a.state_dict())  # as if written to disk: the optimiser shares its state tensors
    resumed = toy_state(seed=99)
    resumed.student.load_state_dict(a.student.state_dict())
    resumed.fake.load_state_dict(a.fake.state_dict())
    resumed.load_state_dict(saved)
    want = dmd_cycle(a, lambda: make_cond(4))
    got = dmd_cycle(resumed, lambda: make_cond(4))
    assert got["loss/generator"] == pytest.approx(want["loss/generator"], rel=1e-6) and got["step"] == 2


def test_injected_nan_raises_diverged_error():
    state = toy_state(critic_updates=1)
    with torch.no_grad():
        state.fake.mix.weight[0, 0] = float("nan")
    with pytest.raises(DivergedError, match="generator step 0: fake-score loss is not finite") as info:
        dmd_cycle(state, lambda: make_cond(4))
    assert info.value.quantity == "fake-score loss" and info.value.step == 0
    state = toy_state(critic_updates=0)
    with torch.no_grad():
        state.student.time.bias[1] = float("inf")
    with pytest.raises(DivergedError, match="student sample"):
        dmd_cycle(state, lambda: make_cond(4))


def test_config_from_recipe_like_object():
    class RecipeLike:
        nfe, critic_updates, guidance_scale, lr_fake, steps = 2, 3, 1.5, 3e-4, 100

    cfg = DMDConfig.from_recipe(RecipeLike(), image_shape=(3, 32, 32))
    assert (cfg.nfe, cfg.critic_updates, cfg.guidance_scale, cfg.lr_fake) == (2, 3, 1.5, 3e-4)
    assert cfg.image_shape == (3, 32, 32) and cfg.student_ts == [1.0, 0.5]


@pytest.mark.slow  # importing diffusers alone takes 5-20 s on this machine
def test_with_the_real_flow_model_when_available():
    models = pytest.importorskip("trainers.models")
    base = models.FlowModel.build("micro", resolution=8, text_dim=4)
    teachers = TeacherSet.of(Teacher("base", base))
    cfg = DMDConfig(nfe=2, critic_updates=1, image_shape=(3, 8, 8))
    state = DMDState.from_base(teachers, teacher_schedule(teachers, nfe=2, switch_step=2), cfg)
    logs = dmd_cycle(state, lambda: make_cond(4, edits=2, shape=(3, 8, 8)))
    assert logs["loss/generator"] == logs["loss/generator"]
