"""Flow-matching identities, timestep lists and samplers.

Convention (rectified flow, as in SD3 / Qwen-Image): ``t = 1`` is pure noise, ``t = 0`` is data,

    z_t = (1 - t) * x + t * eps          (interpolate)
    v   = eps - x                        (velocity target)
    x0  = z_t - t * v                    (x0_from_v)
    eps = z_t + (1 - t) * v              (noise_from_v)

Every other module uses these functions instead of re-deriving them, so a sign error can only live here.
Time tensors are shaped ``[B]`` and broadcast over the image dimensions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``v = f(z_t, t)`` with ``t`` shaped ``[B]``; conditions are bound by the caller (a closure)."""


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape ``t`` of shape [B] to [B, 1, 1, ...] so it broadcasts against ``like``."""
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1))).to(like.dtype)


def interpolate(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_t = (1 - t) x + t eps."""
    tb = _bcast(t, x)
    return (1 - tb) * x + tb * eps


def velocity_target(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """v = eps - x (constant along the straight path from x to eps)."""
    return eps - x


def x0_from_v(z_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """x0 = z_t - t v."""
    return z_t - _bcast(t, z_t) * v


def noise_from_v(z_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """eps = z_t + (1 - t) v."""
    return z_t + (1 - _bcast(t, z_t)) * v


def cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_uncond + scale (v_cond - v_uncond); scale 1 is the conditional model."""
    return v_uncond + scale * (v_cond - v_uncond)


def shift_time(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """SD3's resolution shift t' = s t / (1 + (s - 1) t); shift > 1 spends more steps near noise."""
    return shift * t / (1 + (shift - 1) * t)


def timesteps(n: int, shift: float = 1.0) -> list[float]:
    """The ``n`` start times of an n-step sampler, from 1 down to 1/n (then 0 is the end).

    ``timesteps(4) == [1.0, 0.75, 0.5, 0.25]``: the student's default schedule (DESIGN §6).
    """
    assert n >= 1, f"need at least one step, got {n}"
    return [float(shift_time(1 - i / n, shift)) for i in range(n)]


def sample_train_t(batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Logit-normal(0, 1) training times (SD3): most weight in the middle, where flow matching is hardest."""
    return torch.sigmoid(torch.randn(batch, generator=generator, device=device))


@torch.no_grad()
def euler_sample(velocity: VelocityFn, eps: torch.Tensor, ts: Sequence[float]) -> torch.Tensor:
    """Deterministic Euler ODE solve from t = ts[0] (noise ``eps``) to t = 0.

    ``z_{t'} = z_t + (t' - t) v``; with ``ts = timesteps(n)`` this is the n-NFE teacher sampler.
    """
    z = eps
    ends = list(ts[1:]) + [0.0]
    for t, t_next in zip(ts, ends, strict=True):
        tt = torch.full((z.shape[0],), t, device=z.device)
        z = z + (t_next - t) * velocity(z, tt)
    return z


def student_sample(
    velocity: VelocityFn,
    eps: torch.Tensor,
    ts: Sequence[float],
    noise: Callable[[int], torch.Tensor] | None = None,
) -> torch.Tensor:
    """DMD2's few-step sampler: at each t_k predict x0, then re-noise it to t_{k+1} with fresh noise.

    ``noise(k)`` supplies the fresh noise for the k-th re-noising (common random numbers in evaluation);
    by default it is ``torch.randn_like``. Runs under the caller's grad mode.
    """
    z = eps
    x0 = eps
    for k, t in enumerate(ts):
        tt = torch.full((z.shape[0],), t, device=z.device)
        x0 = x0_from_v(z, tt, velocity(z, tt))
        if k + 1 < len(ts):
            fresh = noise(k) if noise is not None else torch.randn_like(z)
            z = interpolate(x0, fresh, torch.full_like(tt, ts[k + 1]))
    return x0


def flow_matching_loss(
    velocity: VelocityFn, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Conditional flow matching: mse(v(z_t, t), eps - x). Trains teachers and DMD's fake score."""
    z_t = interpolate(x, eps, t)
    return torch.nn.functional.mse_loss(velocity(z_t, t), velocity_target(x, eps))
