"""Tests of trainers/sampling.py: timestep lists, the teachers' Euler sampler, the student's scheduler.

Analytic velocity fields make the samplers' outputs known exactly; recording models check which
items each step evaluates and under which grad mode.
Run: .venv/bin/python -m pytest tests/test_sampling.py -q   (about a second)
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainers.cond import Cond
from trainers.flow import velocity_target
from trainers.sampling import StudentScheduler, euler_sample, gaussian, timesteps

torch.set_num_threads(1)
F64 = torch.float64
SHAPE = (3, 4, 4)


def ids_cond(n: int, dtype=torch.float32) -> Cond:
    """Item i carries its id in text[:, 0, 0], so a model can tell which items it was called on."""
    text = torch.zeros(n, 1, 2, dtype=dtype)
    text[:, 0, 0] = torch.arange(n, dtype=dtype)
    mask = torch.ones(n, 1, dtype=torch.long)
    return Cond(text, mask, text.clone(), mask.clone(), ("text",) * n)


class ToData(nn.Module):
    """The exact velocity for data ``x``: v(z, t) = (z − x_i) / t, so every x0 prediction is x_i."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x = x
        self.calls: list[tuple[list[int], list[float], bool]] = []  # (item ids, times, grad enabled)

    def forward(self, z_t, t, text, text_mask, source=None):
        ids = text[:, 0, 0].long()
        self.calls.append((ids.tolist(), t.tolist(), torch.is_grad_enabled()))
        return (z_t - self.x[ids]) / t.reshape(-1, *([1] * (z_t.dim() - 1)))


class Identity(nn.Module):
    """v = 0, so x0 = z_t: the sampler's z at each step is visible in its output; records its inputs."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.0))
        self.seen: list[tuple[float, torch.Tensor]] = []

    def forward(self, z_t, t, text, text_mask, source=None):
        self.seen.append((t[0].item(), z_t.clone()))
        return self.w * z_t


class Mixing(nn.Module):
    """An arbitrary velocity field: a 1×1 convolution of z_t, scaled by t."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, z_t, t, text, text_mask, source=None):
        return self.conv(z_t) * t.reshape(-1, 1, 1, 1)


# --- timestep lists and the teachers' Euler sampler --------------------------------------------


def test_timesteps_lists():
    assert timesteps(4) == [1.0, 0.75, 0.5, 0.25]
    assert timesteps(1) == [1.0]
    assert len(timesteps(50)) == 50 and timesteps(50)[-1] == pytest.approx(0.02)
    shifted = timesteps(4, shift=3.0)
    assert shifted[0] == pytest.approx(1.0)
    assert all(s > u for s, u in zip(shifted[1:], timesteps(4)[1:], strict=True))  # shift > 1: nearer noise
    assert shifted == sorted(shifted, reverse=True)
    with pytest.raises(AssertionError):
        timesteps(0)


def test_euler_exact_for_constant_velocity():
    """On a straight path (v = eps - x everywhere) Euler is exact with any number of steps."""
    gen = torch.Generator().manual_seed(0)
    x, eps = torch.rand(4, *SHAPE, generator=gen, dtype=F64), torch.randn(4, *SHAPE, generator=gen, dtype=F64)
    v = velocity_target(x, eps)
    for n in (1, 4, 7):
        torch.testing.assert_close(euler_sample(lambda z, t: v, eps, timesteps(n)), x, rtol=0, atol=1e-12)


def test_euler_passes_the_current_time():
    seen = []
    euler_sample(lambda z, t: (seen.append(t.tolist()), torch.zeros_like(z))[1], torch.zeros(2, 1), [1.0, 0.5])
    assert seen == [[1.0, 1.0], [0.5, 0.5]]


def test_euler_on_a_single_point_distribution_converges():
    """Data = {x*}: the exact velocity field is v(z, t) = (z - x*) / t; Euler recovers x* exactly."""
    x_star = torch.tensor([[0.5, -0.25]], dtype=F64)
    eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    out = euler_sample(lambda z, t: (z - x_star) / t[:, None], eps, timesteps(4))
    torch.testing.assert_close(out, x_star, rtol=0, atol=1e-12)


# --- the student's scheduler -------------------------------------------------------------------


def test_scheduler_from_recipe_and_its_timesteps():
    recipe = pytest.importorskip("trainers.recipe").Recipe(nfe=3, timestep_shift=2.0)
    scheduler = StudentScheduler.from_recipe(recipe)
    assert scheduler == StudentScheduler(3, 2.0)
    assert scheduler.timesteps == timesteps(3, 2.0)
    assert StudentScheduler().timesteps == [1.0, 0.75, 0.5, 0.25]  # the Recipe's defaults: nfe 4, shift 1


def test_sample_with_analytic_v_returns_data():
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=F64)
    eps = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=F64)
    calls = []

    def noise(k, idx):
        calls.append((k, idx.tolist()))
        return torch.randn(len(idx), *SHAPE, generator=torch.Generator().manual_seed(k), dtype=F64)

    out = StudentScheduler(4).sample(ToData(x), ids_cond(3, F64), eps, noise)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)
    assert calls == [(0, [0, 1, 2]), (1, [0, 1, 2]), (2, [0, 1, 2])], "fresh noise before each re-noising"


def test_sample_renoises_to_the_next_time():
    model = Identity()
    eps, fresh = torch.ones(1, 1), torch.full((1, 1), -1.0)
    StudentScheduler(2).sample(model, ids_cond(1), eps, lambda k, idx: fresh)
    # Step 0 predicts x0 = 1; step 1 starts from z = (1 - 0.5)·1 + 0.5·(-1) = 0.
    assert [t for t, _ in model.seen] == [1.0, 0.5]
    assert model.seen[1][1].item() == pytest.approx(0.0)


def test_simulate_runs_each_item_to_its_own_step_with_grad_on_the_last_only():
    x = torch.zeros(4, *SHAPE)
    model = ToData(x)
    ts = timesteps(4)
    ks = torch.tensor([0, 3, 1, 3])
    out = StudentScheduler(4).backward_simulate(model, ids_cond(4), torch.randn(4, *SHAPE), ks)
    no_grad = [(ids, t) for ids, t, grad in model.calls if not grad]
    # step j evaluates only the items with k > j: [1, 2, 3] at 1.0, [1, 3] at 0.75 and at 0.5
    assert no_grad == [([1, 2, 3], [1.0] * 3), ([1, 3], [0.75] * 2), ([1, 3], [0.5] * 2)]
    assert [(ids, t) for ids, t, grad in model.calls if grad] == [([0, 1, 2, 3], [ts[0], ts[3], ts[1], ts[3]])]
    torch.testing.assert_close(out, x)


def test_gradients_flow_through_the_last_step_only():
    model = Identity()
    out = StudentScheduler(2).sample(model, ids_cond(2), torch.ones(2, 1), lambda k, idx: torch.zeros(2, 1))
    # step 0 (no grad): x0 = z − t·w·z = 1 at w = 0, z_1 = 0.5; step 1: x0 = z_1 − 0.5·w·z_1
    out.sum().backward()
    assert model.w.grad.item() == pytest.approx(2 * -0.5 * 0.5)


def test_backward_simulation_is_the_sampler_with_generator_noise():
    """Training's samples are the benchmark's sampler fed the noise the generator draws, exactly."""
    torch.manual_seed(0)
    model = Mixing()
    cond, eps = ids_cond(2), torch.randn(2, *SHAPE)
    g = torch.Generator().manual_seed(3)
    noise = [torch.randn(2, *SHAPE, generator=g) for _ in range(3)]
    want = StudentScheduler(4, 2.0).sample(model, cond, eps, lambda k, idx: noise[k][idx])
    ks = torch.tensor([3, 3])
    got = StudentScheduler(4, 2.0).backward_simulate(model, cond, eps, ks, torch.Generator().manual_seed(3))
    assert torch.equal(got, want)


def test_gaussian_draws_only_for_the_items_asked_for():
    eps = torch.zeros(5, *SHAPE, dtype=F64)
    draw = gaussian(eps, torch.Generator().manual_seed(7))
    a = draw(0, torch.tensor([1, 4]))
    assert a.shape == (2, *SHAPE) and a.dtype == F64
    assert torch.equal(a, torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(7), dtype=F64))


def test_sample_steps_are_seeded_and_in_range():
    scheduler = StudentScheduler(3)
    a = scheduler.sample_steps(200, torch.Generator().manual_seed(0))
    assert torch.equal(a, scheduler.sample_steps(200, torch.Generator().manual_seed(0)))
    assert set(a.tolist()) == {0, 1, 2}
