"""Flow-matching identities (trainers/flow.py), checked on analytic cases (samplers: test_sampling.py).

Run: .venv/bin/python -m pytest tests/test_flow.py -q   (well under a second)
"""

from __future__ import annotations

import pytest
import torch

from trainers.flow import (
    cfg,
    cfg_norm_rescaled,
    flow_matching_loss,
    interpolate,
    noise_from_v,
    sample_train_t,
    shift_time,
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


def test_flow_matching_loss_zero_at_the_true_velocity(pair):
    x, eps, t = pair
    v = velocity_target(x, eps)
    assert flow_matching_loss(lambda z, tt: v, x, eps, t).item() == pytest.approx(0.0, abs=1e-24)
    loss = flow_matching_loss(lambda z, tt: torch.zeros_like(z), x, eps, t)
    torch.testing.assert_close(loss, v.square().mean())


def test_norm_rescaled_cfg_keeps_each_tokens_conditional_norm_and_matches_the_pipelines_formula():
    """Qwen-Image's true CFG on packed tokens equals ours on [B, C, H, W] (a token = one 2×2 patch)."""
    from trainers.models import patchify
    from trainers.worlds.diffusers.latent import norm_rescaled_cfg

    gen = torch.Generator().manual_seed(0)
    v_cond, v_uncond = torch.randn(2, 2, 16, 8, 8, generator=gen)
    ours = cfg_norm_rescaled(v_cond, v_uncond, 4.0)
    assert torch.allclose(ours, norm_rescaled_cfg(v_cond, v_uncond, 4.0), atol=1e-6)
    norms = lambda v: patchify(v, 2).norm(dim=-1)  # noqa: E731
    assert torch.allclose(norms(ours), norms(v_cond), atol=1e-5)
    assert not torch.allclose(ours, cfg(v_cond, v_uncond, 4.0))
