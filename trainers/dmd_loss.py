"""The DMD2 maths for flow matching (Yin et al. 2024, arXiv 2405.14867; DESIGN §6).

A few-step student G is trained with the distribution-matching gradient: the difference between a
fake score F (a flow model trained on G's own samples) and the real score (a mix of frozen teachers
with CFG). Read top to bottom: :func:`distribution_matching_grad` and :func:`generator_loss` (the
gradient and the loss that carries it), :func:`fake_score_loss` (F's flow matching) and
:func:`distribution_matching_loss` (G's loss on its samples). The update cycle that uses them is
``trainers/dmd.py``. Prediction type is explicit: every model predicts a velocity v = eps − x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainers import flow
from trainers.cond import Cond, velocity
from trainers.divergence import FiniteChecks
from trainers.parallel import ONE_PROCESS, Shard
from trainers.teachers import TeacherSchedule, TeacherSet, real_x0


def _per_sample(x: torch.Tensor) -> list[int]:
    return list(range(1, x.dim()))


@torch.no_grad()
def distribution_matching_grad(
    x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """grad = (x0_fake − x0_real) / mean_per_sample(|x − x0_real|), NaNs zeroed.

    DMD2's ``compute_distribution_matching_loss``: p_real − p_fake with p = x − x0; the per-sample
    normaliser makes the step size independent of how far the sample is from the teacher's x0.
    The logs are 0-d device tensors: reading them is a host sync, left to report steps.
    """
    normaliser = (x - x0_real).abs().mean(dim=_per_sample(x), keepdim=True)
    grad = torch.nan_to_num((x0_fake - x0_real) / normaliser)
    logs = {
        "dm/grad_abs_mean": grad.abs().mean(),
        "dm/grad_norm": grad.norm(),
        "dm/normaliser": normaliser.mean(),
    }
    return grad, logs


def generator_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 · mse(x, stopgrad(x − grad)): its gradient wrt x is grad / x.numel() (DMD2)."""
    return 0.5 * F.mse_loss(x, (x - grad).detach())


def _uniform_t(n: int, t_range: tuple[float, float], like: torch.Tensor, generator, shard: Shard) -> torch.Tensor:
    lo, hi = t_range
    return lo + (hi - lo) * shard.rand(n, generator, device=like.device, dtype=like.dtype)


def _randn(like: torch.Tensor, generator, shard: Shard) -> torch.Tensor:
    return shard.randn(like.shape[0], like.shape[1:], generator, device=like.device, dtype=like.dtype)


def fake_score_loss(
    fake_model: nn.Module,
    x: torch.Tensor,
    cond: Cond,
    generator: torch.Generator | None = None,
    t_range: tuple[float, float] = (0.02, 0.98),
    shard: Shard = ONE_PROCESS,
) -> torch.Tensor:
    """Flow matching of F on detached student samples (DMD2's ``compute_loss_fake``, velocity target).

    t is uniform over the range where the DM loss queries F, as DMD2 trains its fake score on
    uniform timesteps. ``shard``: x holds this process's rows of a data-parallel batch.
    """
    x = x.detach()
    t = _uniform_t(x.shape[0], t_range, x, generator, shard)
    return flow.flow_matching_loss(
        lambda z, tt: velocity(fake_model, z, tt, cond), x, _randn(x, generator, shard), t
    )


def distribution_matching_loss(
    x: torch.Tensor,
    ks: torch.Tensor,
    cond: Cond,
    *,
    teachers: TeacherSet,
    schedule: TeacherSchedule,
    fake: nn.Module,
    guidance_scale: float,
    checks: FiniteChecks,
    cfg: str = "plain",
    generator: torch.Generator | None = None,
    t_range: tuple[float, float] = (0.02, 0.98),
    shard: Shard = ONE_PROCESS,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Generator loss for student samples ``x`` made at student steps ``ks``.

    Noise x to t ~ U[t_range]; the real x0 mixes the teachers with λ_k(c) and CFG, the fake x0
    is F's plain conditional prediction (DMD2 uses no guidance on the fake score).
    x and both x0 are queued on ``checks``: the ``nan_to_num`` of the gradient is for a zero
    normaliser, and would otherwise turn a broken teacher into a zero loss.
    """
    checks.add("student sample", x)
    with torch.no_grad():
        t = _uniform_t(x.shape[0], t_range, x, generator, shard)
        z_t = flow.interpolate(x.detach(), _randn(x, generator, shard), t)
        weights = schedule.matrix(ks, cond.categories, cond.is_edit)
        x0_real = real_x0(teachers, weights, z_t, t, cond, guidance_scale, cfg)
        x0_fake = flow.x0_from_v(z_t, t, velocity(fake, z_t, t, cond))
    checks.add("real-score x0 (teachers)", x0_real)
    checks.add("fake-score x0", x0_fake)
    grad, logs = distribution_matching_grad(x.detach(), x0_real, x0_fake)
    return generator_loss(x, grad), logs
