"""The DMD2 update cycle (DESIGN §6): the state of a run and one generator step of it.

F is updated ``critic_updates`` times per G update (two time-scale update rule, TTUR), with the
losses of ``trainers/dmd_loss.py``. Read top to bottom: :class:`DMDConfig` (what a Recipe sets),
:class:`DMDState` (models, optimisers, RNG), the two updates and :func:`dmd_cycle`.

The cycle keeps the device busy: its finiteness checks wait for the device once per generator
step (``trainers/divergence.py``), and its logs stay device tensors until a reader asks for
Python floats (:meth:`CycleLogs.floats`, on report steps).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from trainers.adapters import EMA, FAKE, STUDENT, LoraHost, LoraSpec, enable_gradient_checkpointing
from trainers.cond import Cond
from trainers.divergence import FiniteChecks
from trainers.dmd_loss import distribution_matching_loss, fake_score_loss
from trainers.parallel import ONE_PROCESS, Shard
from trainers.sampling import StudentScheduler, sharded_gaussian
from trainers.teachers import TeacherSchedule, TeacherSet

FROM_WORLD = {"source": "world"}  # metadata of the DMDConfig fields that are not Recipe fields


@dataclass(frozen=True)
class DMDConfig:
    """The Recipe fields the DMD updates need (names as in the Recipe), plus what the world fixes."""

    nfe: int = 4
    timestep_shift: float = 1.0
    guidance_scale: float = 3.0
    cfg: str = "plain"  # "plain" | "norm_rescaled" (trainers.cond.guided_velocity)
    critic_updates: int = 5
    grad_accum: int = 1
    max_grad_norm: float = 10.0
    lr_generator: float = 1e-4
    lr_fake: float = 1e-4
    warmup_steps: int = 10
    ema_decay: float = 0.0  # 0 = no EMA
    lora_rank: int = 16  # adapter mode (from_adapters) only
    gradient_checkpointing: bool = False  # recompute G's and F's activations in backward (memory for time)
    image_shape: tuple[int, int, int] = field(default=(3, 16, 16), metadata=FROM_WORLD)
    # DM-loss noise levels (DMD2's min/max step 2%/98%); fixed, not a Recipe field
    t_range: tuple[float, float] = field(default=(0.02, 0.98), metadata=FROM_WORLD)

    @classmethod
    def from_recipe(cls, recipe, image_shape: tuple[int, int, int]) -> DMDConfig:
        """Every Recipe-named field from ``recipe`` (a missing one is an AttributeError), and the image shape."""
        values = {f.name: getattr(recipe, f.name) for f in fields(cls) if f.metadata != FROM_WORLD}
        return cls(**values, image_shape=image_shape)

    @property
    def scheduler(self) -> StudentScheduler:
        """The student's sampler: what the backward simulation runs and the benchmark scores."""
        return StudentScheduler(self.nfe, self.timestep_shift)


def _warmup(steps: int, every: int = 1) -> Callable[[int], float]:
    """Linear warm-up over ``steps`` iterations for a model updated once every ``every`` of them.

    An iteration is one F update. DMD2 steps both schedulers every iteration, so G — updated every
    ``critic_updates``-th iteration — reaches the full rate after ``steps / critic_updates`` of its
    own updates: its s-th update runs at (s · every + 1) / steps.
    """
    return lambda s: min(1.0, (s * every + 1) / steps) if steps > 0 else 1.0


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
    shard: Shard = ONE_PROCESS  # this process's rows of each batch (trainers/parallel.py); rank 0 of 1 alone

    @classmethod
    def create(
        cls,
        student: nn.Module,
        fake: nn.Module,
        teachers: TeacherSet,
        schedule: TeacherSchedule,
        config: DMDConfig,
        seed: int = 0,
        shard: Shard = ONE_PROCESS,
        ema: nn.Module | None = None,
    ) -> DMDState:
        """Wire optimisers (AdamW + linear warm-up), the EMA copy and a seeded RNG around G and F.

        Every process of a data-parallel run passes the same seed: they draw the same random numbers.
        ``ema``: the EMA model when the config asks for one (adapter mode: an adapter starting as G's);
        by default a deep copy of G.
        """
        opt_s = torch.optim.AdamW(student.parameters(), lr=config.lr_generator)
        opt_f = torch.optim.AdamW(fake.parameters(), lr=config.lr_fake)
        if config.ema_decay > 0:
            ema = (ema if ema is not None else copy.deepcopy(student)).requires_grad_(False).eval()
        else:
            ema = None
        device = next(student.parameters()).device
        return cls(
            student=student.train(),
            fake=fake.train(),
            teachers=teachers,
            schedule=schedule,
            config=config,
            opt_student=opt_s,
            opt_fake=opt_f,
            lr_student=torch.optim.lr_scheduler.LambdaLR(opt_s, _warmup(config.warmup_steps, config.critic_updates)),
            lr_fake=torch.optim.lr_scheduler.LambdaLR(opt_f, _warmup(config.warmup_steps)),
            ema=ema,
            rng=torch.Generator(device=device).manual_seed(seed),
            shard=shard,
        )

    @classmethod
    def from_base(
        cls, teachers: TeacherSet, schedule: TeacherSchedule, config: DMDConfig, seed: int = 0,
        shard: Shard = ONE_PROCESS,
    ) -> DMDState:
        """G and F both start as trainable copies of the base teacher (DMD2): full mode."""
        base = teachers["base"].model
        student = copy.deepcopy(base).requires_grad_(True)
        fake = copy.deepcopy(base).requires_grad_(True)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(student)
            enable_gradient_checkpointing(fake)
        return cls.create(student, fake, teachers, schedule, config, seed, shard)

    @classmethod
    def from_adapters(
        cls, teachers: TeacherSet, schedule: TeacherSchedule, config: DMDConfig, seed: int = 0,
        shard: Shard = ONE_PROCESS, spec: LoraSpec | None = None,
    ) -> DMDState:
        """G and F as two LoRA adapters (rank ``config.lora_rank``) on one frozen base: adapter mode.

        The base is the base teacher's weights, shared, never copied (``trainers/adapters.py``); both
        adapters start as no change (LoRA's B = 0: G = F = base, as in DMD2) and the EMA is a third adapter, of G's weights.
        The teachers keep their own modules: the base teacher runs the same weights with no adapter.
        """
        names = (STUDENT, FAKE, EMA) if config.ema_decay > 0 else (STUDENT, FAKE)
        host = LoraHost(teachers["base"].model, names, spec or LoraSpec(rank=config.lora_rank),
                        gradient_checkpointing=config.gradient_checkpointing)
        ema = None
        if config.ema_decay > 0:
            host.copy_adapter(STUDENT, EMA)
            ema = host.view(EMA)
        return cls.create(host.view(STUDENT), host.view(FAKE), teachers, schedule, config, seed, shard, ema=ema)

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


def _clip_and_step(model: nn.Module, opt, sched, max_norm: float, checks: FiniteChecks, what: str,
                   shard: Shard) -> torch.Tensor:
    """Average the gradients over the processes, clip their norm and step; queue the norm and the
    new parameters on ``checks``. Returns the pre-clip norm (a device scalar).
    """
    shard.average_gradients(model)  # every process then clips and steps the same gradient
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    checks.add(f"{what} gradient norm", norm)
    opt.step()
    sched.step()
    checks.add_parameters(what, model)
    return norm.detach()


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay · ema + (1 − decay) · model, parameter by parameter."""
    for pe, p in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(p.detach(), 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(b)


def _student_samples(state: DMDState, cond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward-simulated student samples x (with grad through the last step) and their steps k.

    In a data-parallel run ``cond`` holds this process's rows; the random numbers are the global
    batch's (``trainers/parallel.py``), so the rows are what one process would have made.
    """
    cfg, shard = state.config, state.shard
    device = next(state.student.parameters()).device
    eps = shard.randn(len(cond), cfg.image_shape, state.rng, device=device)
    ks_global = cfg.scheduler.sample_steps(len(cond) * shard.world, state.rng, device)
    ks = ks_global[shard.rows(len(ks_global))]
    noise = sharded_gaussian(eps, ks_global, shard, state.rng)
    return cfg.scheduler.simulate(state.student, cond, eps, ks, noise), ks


@dataclass
class CycleLogs:
    """The logs of one :func:`dmd_cycle`: training scalars as device tensors, until :meth:`floats`."""

    fake: list[tuple[list[torch.Tensor], torch.Tensor]] = field(default_factory=list)  # per F update: losses, norm
    generator: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per G micro-batch: loss, DM logs
    generator_norm: torch.Tensor | None = None  # the G update's pre-clip norm
    host: dict[str, float] = field(default_factory=dict)  # learning rates, step, wall times

    def floats(self) -> dict[str, float]:
        """Every log as a Python float (one host sync): micro-batch means, then means over F updates."""
        scalars = [t for losses, norm in self.fake for t in (*losses, norm)]
        scalars += [v for logs in self.generator for v in logs.values()]
        scalars += [] if self.generator_norm is None else [self.generator_norm]
        values = iter(torch.cat([t.reshape(1) for t in scalars]).tolist() if scalars else [])
        fake = [{"loss/fake": sum(next(values) for _ in losses) / len(losses), "grad_norm/fake": next(values)}
                for losses, _ in self.fake]
        out = _mean([{key: next(values) for key in logs} for logs in self.generator]) if self.generator else {}
        out |= {} if self.generator_norm is None else {"grad_norm/generator": next(values)}
        return out | (_mean(fake) if fake else {}) | self.host


def _mean(logs: list[dict[str, float]]) -> dict[str, float]:
    return {key: math.fsum(d[key] for d in logs) / len(logs) for key in logs[0]}


def fake_update(state: DMDState, draw: Callable[[], Cond], checks: FiniteChecks, logs: CycleLogs) -> None:
    """One optimiser step of F: flow matching on fresh, gradient-free student samples."""
    cfg = state.config
    state.opt_fake.zero_grad(set_to_none=True)
    losses = []
    for _ in range(cfg.grad_accum):
        cond = draw()
        with torch.no_grad():
            x, _ = _student_samples(state, cond)
        loss = fake_score_loss(state.fake, x, cond, state.rng, cfg.t_range, state.shard)
        checks.add("fake-score loss", loss)
        (loss / cfg.grad_accum).backward()
        losses.append(loss.detach())
    norm = _clip_and_step(
        state.fake, state.opt_fake, state.lr_fake, cfg.max_grad_norm, checks, "fake score", state.shard
    )
    logs.fake.append((losses, norm))


def generator_update(state: DMDState, draw: Callable[[], Cond], checks: FiniteChecks, logs: CycleLogs) -> None:
    """One optimiser step of G with the distribution-matching loss (and the EMA update)."""
    cfg = state.config
    state.opt_student.zero_grad(set_to_none=True)
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
            cfg=cfg.cfg,
            checks=checks,
            generator=state.rng,
            t_range=cfg.t_range,
            shard=state.shard,
        )
        checks.add("generator loss", loss)
        (loss / cfg.grad_accum).backward()
        logs.generator.append({"loss/generator": loss.detach(), **dm_logs})
    norm = _clip_and_step(
        state.student, state.opt_student, state.lr_student, cfg.max_grad_norm, checks, "student", state.shard
    )
    logs.generator_norm = norm
    if state.ema is not None:
        update_ema(state.ema, state.student, cfg.ema_decay)


def dmd_cycle(state: DMDState, draw: Callable[[], Cond]) -> CycleLogs:
    """One generator cycle: ``critic_updates`` F updates, then one G update (TTUR, DMD2 §4.2).

    ``draw()`` returns the conditions of a fresh data batch; every update draws its own, as in
    DMD2 where each iteration sees a new batch. Raises DivergedError (at generator step
    ``state.step``) when a loss, gradient norm, sample or parameter is not finite. The wall times
    are the host's: on a GPU, work queued before the checks' one wait counts in time/generator_s.
    """
    lrs = {"lr/generator": state.lr_student.get_last_lr()[0], "lr/fake": state.lr_fake.get_last_lr()[0]}
    checks, logs = FiniteChecks(state.step), CycleLogs()
    start = time.perf_counter()
    for _ in range(state.config.critic_updates):
        fake_update(state, draw, checks, logs)
    mid = time.perf_counter()
    generator_update(state, draw, checks, logs)
    checks.verify()  # the cycle's one wait for the device
    end = time.perf_counter()
    state.step += 1
    logs.host = lrs | {
        "step": float(state.step),
        "time/fake_s": mid - start,
        "time/generator_s": end - mid,
        "time/cycle_s": end - start,
    }
    return logs
