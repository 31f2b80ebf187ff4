"""Flow-matching identities: the formulas every loss and sampler is built from.

Convention (rectified flow, as in SD3 / Qwen-Image): ``t = 1`` is pure noise, ``t = 0`` is data,

    z_t = (1 - t) * x + t * eps          (interpolate)
    v   = eps - x                        (velocity target)
    x0  = z_t - t * v                    (x0_from_v)
    eps = z_t + (1 - t) * v              (noise_from_v)

Every other module uses these functions instead of re-deriving them, so a sign error can only live here.
The samplers built on them (timestep lists, the student's scheduler, Euler) are in ``sampling.py``.
Time tensors are shaped ``[B]`` and broadcast over the image dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

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


def cfg_norm_rescaled(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float, patch: int = 2) -> torch.Tensor:
    """Qwen-Image's "true CFG": :func:`cfg`, then each token rescaled to the conditional velocity's norm.

    A token is one p×p patch of all channels ([B, C, H, W] -> the pipelines' packed [B, HW/p², C·p²]),
    so ``||v_token|| = ||v_cond_token||``: guidance turns the velocity without lengthening it, which keeps
    high scales from over-saturating. Equal to QwenImagePipeline's rescale on its packed latents.
    """
    v = cfg(v_cond, v_uncond, scale)
    b, c, h, w = v.shape
    tokens = lambda x: x.reshape(b, c, h // patch, patch, w // patch, patch)  # noqa: E731
    dims = (1, 3, 5)
    norm = lambda x: torch.linalg.vector_norm(tokens(x), dim=dims, keepdim=True)  # noqa: E731
    ratio = norm(v_cond) / norm(v)
    return (tokens(v) * ratio).reshape(b, c, h, w)


def shift_time(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """SD3's resolution shift t' = s t / (1 + (s - 1) t); shift > 1 spends more steps near noise."""
    return shift * t / (1 + (shift - 1) * t)


def sample_train_t(batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Logit-normal(0, 1) training times (SD3): most weight in the middle, where flow matching is hardest."""
    return torch.sigmoid(torch.randn(batch, generator=generator, device=device))


def flow_matching_loss(
    velocity: VelocityFn, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Conditional flow matching: mse(v(z_t, t), eps - x). Trains teachers and DMD's fake score."""
    z_t = interpolate(x, eps, t)
    return torch.nn.functional.mse_loss(velocity(z_t, t), velocity_target(x, eps))
