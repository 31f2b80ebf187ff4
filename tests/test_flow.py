"""Flow-matching identities, timestep lists and samplers (trainers/flow.py), checked on analytic cases.

Run: .venv/bin/python -m pytest tests/test_flow.py -q   (well under a second)
"""

from __future__ import annotations

import pytest
import torch

from trainers.flow import (
    cfg,
    euler_sample,
    flow_matching_loss,
    interpolate,
    noise_from_v,
    sample_train_t,
    shift_time,
    student_sample,
    timesteps,
    velocity_target,
    x0_from_v,
)

torch.set_num_threads(1)
F64 = torch.float64  # identities are checked to near machine precision


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=gen, dtype=F64) * 2 - 1
    eps = torch.randn(4, 3, 8, 8, generator=gen, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.75, 1.0], dtype=F64)
    return x, eps, t


def test_interpolate_endpoints_and_midpoint(pair):
    x, eps, t = pair
    z = interpolate(x, eps, t)
    assert torch.equal(z[0], x[0]) and torch.equal(z[3], eps[3])  # t = 0 is data, t = 1 is noise
    torch.testing.assert_close(z[1], 0.7 * x[1] + 0.3 * eps[1])


def test_velocity_is_the_time_derivative(pair):
    x, eps, _ = pair
    t, dt = torch.full((4,), 0.4, dtype=F64), 1e-6
    finite_diff = (interpolate(x, eps, t + dt) - interpolate(x, eps, t)) / dt
    torch.testing.assert_close(finite_diff, velocity_target(x, eps), rtol=1e-6, atol=1e-6)


def test_x0_and_noise_recovered_exactly_from_analytic_v(pair):
    x, eps, t = pair
    z, v = interpolate(x, eps, t), velocity_target(x, eps)
    torch.testing.assert_close(x0_from_v(z, t, v), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(noise_from_v(z, t, v), eps, rtol=0, atol=1e-12)


def test_cfg():
    cond, uncond = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 1.0])
    assert torch.equal(cfg(cond, uncond, 1.0), cond)
    assert torch.equal(cfg(cond, uncond, 0.0), uncond)
    assert torch.equal(cfg(cond, uncond, 3.0), torch.tensor([4.0, -5.0]))


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


def test_shift_time_fixes_endpoints_and_is_identity_at_one():
    assert shift_time(0.0, 3.0) == 0.0 and shift_time(1.0, 3.0) == 1.0
    assert shift_time(0.5, 1.0) == 0.5
    assert shift_time(0.5, 3.0) == pytest.approx(0.75)


def test_sample_train_t_in_open_unit_interval_and_seeded():
    a = sample_train_t(1000, torch.Generator().manual_seed(0))
    b = sample_train_t(1000, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (1000,)
    assert (a > 0).all() and (a < 1).all()
    assert abs(a.median().item() - 0.5) < 0.05  # logit-normal(0, 1) is centred at 1/2


def test_euler_exact_for_constant_velocity(pair):
    """On a straight path (v = eps - x everywhere) Euler is exact with any number of steps."""
    x, eps, _ = pair
    v = velocity_target(x, eps)
    for n in (1, 4, 7):
        out = euler_sample(lambda z, t: v, eps, timesteps(n))
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


def test_euler_passes_the_current_time():
    seen = []
    euler_sample(
        lambda z, t: (seen.append(t.tolist()), torch.zeros_like(z))[1], torch.zeros(2, 1), [1.0, 0.5]
    )
    assert seen == [[1.0, 1.0], [0.5, 0.5]]


def test_euler_on_a_single_point_distribution_converges():
    """Data = {x*}: the exact velocity field is v(z, t) = (z - x*) / t; Euler recovers x* exactly."""
    x_star = torch.tensor([[0.5, -0.25]], dtype=F64)
    eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(3), dtype=F64)

    def v(z, t):
        return (z - x_star) / t[:, None]

    torch.testing.assert_close(euler_sample(v, eps, timesteps(4)), x_star, rtol=0, atol=1e-12)


def test_student_sample_with_analytic_v_returns_data(pair):
    x, eps, _ = pair

    def v(z, t):  # the exact velocity for data x: (z - x) / t along any path through z
        return (z - x) / t.reshape(-1, 1, 1, 1)

    calls = []

    def noise(k):
        calls.append(k)
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(k), dtype=F64)

    out = student_sample(v, eps, timesteps(4), noise=noise)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)
    assert calls == [0, 1, 2], "fresh noise before each re-noising, none after the last step"


def test_student_sample_renoises_to_the_next_time():
    seen = []

    def v(z, t):
        seen.append((t[0].item(), z.clone()))
        return torch.zeros_like(z)  # x0 = z

    eps, fresh = torch.ones(1, 1), torch.full((1, 1), -1.0)
    student_sample(v, eps, [1.0, 0.5], noise=lambda k: fresh)
    # Step 0 predicts x0 = 1; step 1 starts from z = (1 - 0.5)·1 + 0.5·(-1) = 0.
    assert [t for t, _ in seen] == [1.0, 0.5]
    assert seen[1][1].item() == pytest.approx(0.0)


def test_student_sample_keeps_grad():
    w = torch.tensor(0.5, requires_grad=True)
    out = student_sample(lambda z, t: w * z, torch.ones(2, 1), [1.0])
    out.sum().backward()
    assert w.grad is not None and w.grad.item() == pytest.approx(-2.0)  # x0 = z - t w z


def test_flow_matching_loss_zero_at_the_true_velocity(pair):
    x, eps, t = pair
    v = velocity_target(x, eps)
    assert flow_matching_loss(lambda z, tt: v, x, eps, t).item() == pytest.approx(0.0, abs=1e-24)
    loss = flow_matching_loss(lambda z, tt: torch.zeros_like(z), x, eps, t)
    torch.testing.assert_close(loss, v.square().mean())
