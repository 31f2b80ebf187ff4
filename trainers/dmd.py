"""DMD2 for flow matching (Yin et al. 2024, arXiv 2405.14867; DESIGN §6).

A few-step student G is trained with the distribution-matching gradient: the difference between a
fake score F (a flow model trained on G's own samples) and the real score (a mix of frozen teachers
with CFG). F is updated ``critic_updates`` times per G update (two time-scale update rule, TTUR).

Read top to bottom: the maths (:func:`distribution_matching_grad`, :func:`generator_loss`,
:func:`fake_score_loss`), the student's backward simulation, then the update cycle
(:class:`DMDState`, :func:`fake_update`, :func:`generator_update`, :func:`dmd_cycle`).
Prediction type is explicit: every model predicts a velocity v = eps − x (see ``flow.py``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from trainers import flow
from trainers.teachers import Cond, TeacherSchedule, TeacherSet, real_x0, velocity


class DivergedError(RuntimeError):
    """A non-finite loss, gradient norm or parameter: the run stops and the sweep records a failed trial."""

    def __init__(self, step: int, quantity: str, value: float | None = None):
        self.step, self.quantity, self.value = step, quantity, value
        shown = "" if value is None else f" ({value})"
        super().__init__(f"training diverged at generator step {step}: {quantity} is not finite{shown}")

    def __reduce__(self):
        # rebuild from the constructor's arguments, so the error survives pickling (Ray workers -> driver)
        return (DivergedError, (self.step, self.quantity, self.value))


# --- 1. the DMD2 maths ------------------------------------------------------------------------


def _per_sample(x: torch.Tensor) -> list[int]:
    return list(range(1, x.dim()))


@torch.no_grad()
def distribution_matching_grad(
    x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """grad = (x0_fake − x0_real) / mean_per_sample(|x − x0_real|), NaNs zeroed.

    DMD2's ``compute_distribution_matching_loss``: p_real − p_fake with p = x − x0; the per-sample
    normaliser makes the step size independent of how far the sample is from the teacher's x0.
    """
    normaliser = (x - x0_real).abs().mean(dim=_per_sample(x), keepdim=True)
    grad = torch.nan_to_num((x0_fake - x0_real) / normaliser)
    logs = {
        "dm/grad_abs_mean": grad.abs().mean().item(),
        "dm/grad_norm": grad.norm().item(),
        "dm/normaliser": normaliser.mean().item(),
    }
    return grad, logs


def generator_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 · mse(x, stopgrad(x − grad)): its gradient wrt x is grad / x.numel() (DMD2)."""
    return 0.5 * F.mse_loss(x, (x - grad).detach())


def _uniform_t(n: int, t_range: tuple[float, float], like: torch.Tensor, generator) -> torch.Tensor:
    lo, hi = t_range
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)


def _randn(like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def fake_score_loss(
    fake_model: nn.Module,
    x: torch.Tensor,
    cond: Cond,
    generator: torch.Generator | None = None,
    t_range: tuple[float, float] = (0.02, 0.98),
) -> torch.Tensor:
    """Flow matching of F on detached student samples (DMD2's ``compute_loss_fake``, velocity target).

    t is uniform over the range where the DM loss queries F, as DMD2 trains its fake score on
    uniform timesteps.
    """
    x = x.detach()
    t = _uniform_t(x.shape[0], t_range, x, generator)
    return flow.flow_matching_loss(
        lambda z, tt: velocity(fake_model, z, tt, cond), x, _randn(x, generator), t
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
    generator: torch.Generator | None = None,
    t_range: tuple[float, float] = (0.02, 0.98),
    step: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Generator loss for student samples ``x`` made at student steps ``ks``.

    Noise x to t ~ U[t_range]; the real x0 mixes the teachers with λ_k(c) and CFG, the fake x0
    is F's plain conditional prediction (DMD2 uses no guidance on the fake score).
    A non-finite x0 raises DivergedError (at generator step ``step``): the ``nan_to_num`` of the
    gradient is for a zero normaliser, and would otherwise turn a broken teacher into a zero loss.
    """
    _check_finite(x.detach(), step, "student sample")
    with torch.no_grad():
        t = _uniform_t(x.shape[0], t_range, x, generator)
        z_t = flow.interpolate(x.detach(), _randn(x, generator), t)
        weights = schedule.matrix(ks, cond.categories)
        x0_real = real_x0(teachers, weights, z_t, t, cond, guidance_scale)
        x0_fake = flow.x0_from_v(z_t, t, velocity(fake, z_t, t, cond))
    _check_finite(x0_real, step, "real-score x0 (teachers)")
    _check_finite(x0_fake, step, "fake-score x0")
    grad, logs = distribution_matching_grad(x.detach(), x0_real, x0_fake)
    return generator_loss(x, grad), logs


# --- 2. backward simulation of the student ------------------------------------------------------


def sample_student_steps(n: int, nfe: int, generator=None, device=None) -> torch.Tensor:
    """One student step k ~ U{0..nfe−1} per item, so each item's teacher weights follow its own k."""
    return torch.randint(0, nfe, (n,), generator=generator, device=device)


def backward_simulate(
    student: nn.Module,
    cond: Cond,
    eps: torch.Tensor,
    ts: list[float],
    ks: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x = G's x0 prediction at step k_i of its own sampler, with gradients through that last step only.

    DMD2's backward simulation: run G from noise for k_i steps without gradients (predict x0,
    re-noise to the next t with fresh noise, as ``flow.student_sample``), then one step with
    gradients. Items still running at step j are the only ones evaluated at step j.
    """
    t_list = torch.tensor(ts, device=eps.device, dtype=eps.dtype)
    z = eps.detach().clone()
    with torch.no_grad():
        for j in range(int(ks.max()) if len(ks) else 0):
            idx = (ks > j).nonzero().squeeze(1)
            t = t_list[j].expand(len(idx))
            x0 = flow.x0_from_v(z[idx], t, velocity(student, z[idx], t, cond.select(idx)))
            z[idx] = flow.interpolate(x0, _randn(x0, generator), t_list[j + 1].expand(len(idx)))
    t_k = t_list[ks]
    return flow.x0_from_v(z, t_k, velocity(student, z, t_k, cond))


# --- 3. the TTUR update cycle -------------------------------------------------------------------


@dataclass(frozen=True)
class DMDConfig:
    """The Recipe fields the DMD updates need (names as in the Recipe), plus the image shape."""

    nfe: int = 4
    timestep_shift: float = 1.0
    guidance_scale: float = 3.0
    critic_updates: int = 5
    grad_accum: int = 1
    max_grad_norm: float = 10.0
    lr_generator: float = 1e-4
    lr_fake: float = 1e-4
    warmup_steps: int = 10
    ema_decay: float = 0.0  # 0 = no EMA
    image_shape: tuple[int, int, int] = (3, 16, 16)
    t_range: tuple[float, float] = (0.02, 0.98)  # DM-loss noise levels (DMD2's min/max step 2%/98%)

    @classmethod
    def from_recipe(cls, recipe, **overrides) -> DMDConfig:
        """Copy the same-named fields of a Recipe (or any object); ``overrides`` win (e.g. image_shape)."""
        values = {f.name: getattr(recipe, f.name) for f in fields(cls) if hasattr(recipe, f.name)}
        return cls(**(values | overrides))

    @property
    def student_ts(self) -> list[float]:
        return flow.timesteps(self.nfe, self.timestep_shift)


def _warmup(steps: int) -> Callable[[int], float]:
    """Linear warm-up factor: (s + 1) / steps for the first ``steps`` updates, then 1."""
    return lambda s: min(1.0, (s + 1) / steps) if steps > 0 else 1.0


@dataclass
class DMDState:
    """Everything a DMD run updates: student G, fake score F, their optimisers, optional EMA of G."""

    student: nn.Module
    fake: nn.Module
    teachers: TeacherSet
    schedule: TeacherSchedule
    config: DMDConfig
    opt_student: torch.optim.Optimizer
    opt_fake: torch.optim.Optimizer
    lr_student: torch.optim.lr_scheduler.LambdaLR
    lr_fake: torch.optim.lr_scheduler.LambdaLR
    ema: nn.Module | None
    rng: torch.Generator
    step: int = 0

    @classmethod
    def create(
        cls,
        student: nn.Module,
        fake: nn.Module,
        teachers: TeacherSet,
        schedule: TeacherSchedule,
        config: DMDConfig,
        seed: int = 0,
    ) -> DMDState:
        """Wire optimisers (AdamW + linear warm-up), the EMA copy and a seeded RNG around G and F."""
        opt_s = torch.optim.AdamW(student.parameters(), lr=config.lr_generator)
        opt_f = torch.optim.AdamW(fake.parameters(), lr=config.lr_fake)
        ema = copy.deepcopy(student).requires_grad_(False).eval() if config.ema_decay > 0 else None
        device = next(student.parameters()).device
        return cls(
            student=student.train(),
            fake=fake.train(),
            teachers=teachers,
            schedule=schedule,
            config=config,
            opt_student=opt_s,
            opt_fake=opt_f,
            lr_student=torch.optim.lr_scheduler.LambdaLR(opt_s, _warmup(config.warmup_steps)),
            lr_fake=torch.optim.lr_scheduler.LambdaLR(opt_f, _warmup(config.warmup_steps)),
            ema=ema,
            rng=torch.Generator(device=device).manual_seed(seed),
        )

    @classmethod
    def from_base(
        cls, teachers: TeacherSet, schedule: TeacherSchedule, config: DMDConfig, seed: int = 0
    ) -> DMDState:
        """G and F both start as trainable copies of the base teacher (DMD2)."""
        base = teachers["base"].model
        student = copy.deepcopy(base).requires_grad_(True)
        fake = copy.deepcopy(base).requires_grad_(True)
        return cls.create(student, fake, teachers, schedule, config, seed)

    def state_dict(self) -> dict:
        """Optimiser, warm-up and RNG state for resume (model weights are saved by the checkpoint code)."""
        return {
            "step": self.step,
            "opt_student": self.opt_student.state_dict(),
            "opt_fake": self.opt_fake.state_dict(),
            "lr_student": self.lr_student.state_dict(),
            "lr_fake": self.lr_fake.state_dict(),
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.opt_student.load_state_dict(state["opt_student"])
        self.opt_fake.load_state_dict(state["opt_fake"])
        self.lr_student.load_state_dict(state["lr_student"])
        self.lr_fake.load_state_dict(state["lr_fake"])
        self.rng.set_state(state["rng"])


@torch.no_grad()
def _check_finite(value: torch.Tensor, step: int, quantity: str) -> None:
    """Raise DivergedError if ``value`` has a NaN or an infinity."""
    if not bool(torch.isfinite(value).all()):
        raise DivergedError(step, quantity, value.item() if value.numel() == 1 else None)


def _clip_and_step(model: nn.Module, opt, sched, max_norm: float, step: int, what: str) -> float:
    """Clip the gradient norm, step, and check that the parameters stayed finite; returns the pre-clip norm."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    _check_finite(norm, step, f"{what} gradient norm")
    opt.step()
    sched.step()
    for name, p in model.named_parameters():
        _check_finite(p, step, f"{what} parameter {name!r}")
    return norm.item()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay · ema + (1 − decay) · model, parameter by parameter."""
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(b)


def _student_samples(state: DMDState, cond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward-simulated student samples x (with grad through the last step) and their steps k."""
    cfg = state.config
    device = next(state.student.parameters()).device
    eps = torch.randn(len(cond), *cfg.image_shape, generator=state.rng, device=device)
    ks = sample_student_steps(len(cond), cfg.nfe, state.rng, device)
    return backward_simulate(state.student, cond, eps, cfg.student_ts, ks, state.rng), ks


def fake_update(state: DMDState, draw: Callable[[], Cond]) -> dict[str, float]:
    """One optimiser step of F: flow matching on fresh, gradient-free student samples."""
    cfg = state.config
    state.opt_fake.zero_grad(set_to_none=True)
    losses = []
    for _ in range(cfg.grad_accum):
        cond = draw()
        with torch.no_grad():
            x, _ = _student_samples(state, cond)
        loss = fake_score_loss(state.fake, x, cond, state.rng, cfg.t_range)
        _check_finite(loss, state.step, "fake-score loss")
        (loss / cfg.grad_accum).backward()
        losses.append(loss.item())
    norm = _clip_and_step(
        state.fake, state.opt_fake, state.lr_fake, cfg.max_grad_norm, state.step, "fake score"
    )
    return {"loss/fake": sum(losses) / len(losses), "grad_norm/fake": norm}


def generator_update(state: DMDState, draw: Callable[[], Cond]) -> dict[str, float]:
    """One optimiser step of G with the distribution-matching loss (and the EMA update)."""
    cfg = state.config
    state.opt_student.zero_grad(set_to_none=True)
    logs: list[dict[str, float]] = []
    for _ in range(cfg.grad_accum):
        cond = draw()
        x, ks = _student_samples(state, cond)
        loss, dm_logs = distribution_matching_loss(
            x,
            ks,
            cond,
            teachers=state.teachers,
            schedule=state.schedule,
            fake=state.fake,
            guidance_scale=cfg.guidance_scale,
            generator=state.rng,
            t_range=cfg.t_range,
            step=state.step,
        )
        _check_finite(loss, state.step, "generator loss")
        (loss / cfg.grad_accum).backward()
        logs.append({"loss/generator": loss.item(), **dm_logs})
    norm = _clip_and_step(
        state.student, state.opt_student, state.lr_student, cfg.max_grad_norm, state.step, "student"
    )
    if state.ema is not None:
        update_ema(state.ema, state.student, cfg.ema_decay)
    return _mean(logs) | {"grad_norm/generator": norm}


def _mean(logs: list[dict[str, float]]) -> dict[str, float]:
    return {key: math.fsum(d[key] for d in logs) / len(logs) for key in logs[0]}


def dmd_cycle(state: DMDState, draw: Callable[[], Cond]) -> dict[str, float]:
    """One generator cycle: ``critic_updates`` F updates, then one G update (TTUR, DMD2 §4.2).

    ``draw()`` returns the conditions of a fresh data batch; every update draws its own, as in
    DMD2 where each iteration sees a new batch. Returns the logs of the cycle.
    """
    lrs = {"lr/generator": state.lr_student.get_last_lr()[0], "lr/fake": state.lr_fake.get_last_lr()[0]}
    start = time.perf_counter()
    fake_logs = [fake_update(state, draw) for _ in range(state.config.critic_updates)]
    mid = time.perf_counter()
    logs = generator_update(state, draw)
    end = time.perf_counter()
    state.step += 1
    if fake_logs:
        logs |= _mean(fake_logs)
    return (
        logs
        | lrs
        | {
            "step": float(state.step),
            "time/fake_s": mid - start,
            "time/generator_s": end - mid,
            "time/cycle_s": end - start,
        }
    )
