"""Tests of trainers/dmd.py: the TTUR cycle, warm-up, clipping, EMA, resume, divergence, host syncs.

The maths is tested in test_dmd_loss.py, the backward simulation in test_sampling.py.
Run: .venv/bin/python -m pytest tests/test_dmd.py -q
"""

import copy
import sys

import pytest
import torch
from dmd_toys import make_cond, toy_state

from trainers.divergence import DivergedError
from trainers.dmd import CycleLogs, DMDConfig, DMDState, dmd_cycle
from trainers.recipe import Recipe
from trainers.sampling import StudentScheduler
from trainers.teachers import Teacher, TeacherSet, teacher_schedule

torch.set_num_threads(1)


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
        logs = dmd_cycle(state, lambda: draws.append(1) or make_cond(4, edits=1)).floats()
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
    logs = dmd_cycle(state, lambda: make_cond(4)).floats()
    assert logs["lr/generator"] == pytest.approx(0.5e-2)  # warm-up 2 steps: first step at half lr
    assert logs["grad_norm/generator"] > 1e-3  # reported before clipping ...
    assert seen[0] <= 1e-3 * (1 + 1e-4)  # ... and clipped before the step
    for pe, p0, p in zip(
        state.ema.parameters(), before.parameters(), state.student.parameters(), strict=True
    ):
        assert torch.allclose(pe, 0.5 * p0 + 0.5 * p)
    assert state.lr_student.get_last_lr()[0] == pytest.approx(1e-2)


def test_generator_warms_up_per_iteration_as_dmd2():
    """Warm-up counts iterations (F updates): with 2 critic updates per G update and a 4-iteration
    warm-up, G's updates run at 1/4, 3/4, 1 of its rate and F's at 1/4, 2/4, 3/4, 1, 1, 1."""
    state = toy_state(critic_updates=2, warmup_steps=4, lr_generator=1.0, lr_fake=1.0)
    g_rates, f_rates = [], []
    state.opt_student.register_step_pre_hook(lambda opt, *_: g_rates.append(opt.param_groups[0]["lr"]))
    state.opt_fake.register_step_pre_hook(lambda opt, *_: f_rates.append(opt.param_groups[0]["lr"]))
    for _ in range(3):
        dmd_cycle(state, lambda: make_cond(4))
    assert g_rates == pytest.approx([0.25, 0.75, 1.0])
    assert f_rates == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_cycles_are_reproducible_and_resumable():
    a, b = toy_state(seed=5), toy_state(seed=5)
    assert (
        dmd_cycle(a, lambda: make_cond(4)).floats()["loss/generator"]
        == dmd_cycle(b, lambda: make_cond(4)).floats()["loss/generator"]
    )
    saved = copy.deepcopy(a.state_dict())  # as if written to disk: the optimiser shares its state tensors
    resumed = toy_state(seed=99)
    resumed.student.load_state_dict(a.student.state_dict())
    resumed.fake.load_state_dict(a.fake.state_dict())
    resumed.load_state_dict(saved)
    want = dmd_cycle(a, lambda: make_cond(4)).floats()
    got = dmd_cycle(resumed, lambda: make_cond(4)).floats()
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


def test_config_from_recipe():
    recipe = Recipe(nfe=2, timestep_shift=2.0, critic_updates=3, guidance_scale=1.5, lr_fake=3e-4, ema_decay=0.5)
    cfg = DMDConfig.from_recipe(recipe, image_shape=(3, 32, 32))
    assert (cfg.nfe, cfg.critic_updates, cfg.guidance_scale, cfg.lr_fake, cfg.ema_decay) == (2, 3, 1.5, 3e-4, 0.5)
    assert cfg.image_shape == (3, 32, 32) and cfg.t_range == DMDConfig().t_range
    assert cfg.scheduler == StudentScheduler(2, 2.0) == StudentScheduler.from_recipe(recipe)

    class Partial:  # a recipe missing a field the updates need is an error, not a silent default
        nfe, critic_updates = 2, 3

    with pytest.raises(AttributeError, match="timestep_shift"):
        DMDConfig.from_recipe(Partial(), image_shape=(3, 8, 8))


def test_a_parameter_overflowing_after_a_step_is_a_divergence():
    """A huge step can overflow a parameter from finite gradients: checked after every update."""
    state = toy_state(critic_updates=2)
    bias = state.fake.time.bias
    steps = []

    def overflow(*_):
        steps.append(1)
        if len(steps) == 2:  # the second fake-score update
            with torch.no_grad():
                bias[0] = float("inf")

    state.opt_fake.register_step_post_hook(overflow)
    with pytest.raises(DivergedError, match="generator step 0: fake score parameter 'time.bias' is not finite"):
        dmd_cycle(state, lambda: make_cond(4))


def test_a_non_finite_gradient_is_named():
    state = toy_state(critic_updates=1)
    state.student.mix.weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(DivergedError, match=r"generator step 0: student gradient norm is not finite \(nan\)"):
        dmd_cycle(state, lambda: make_cond(4))
    assert state.step == 0  # the failed cycle does not count


def test_one_host_sync_for_the_checks_and_none_for_the_logs(monkeypatch):
    """Inside trainers/, a cycle reads one bool (the checks' verify) and no .item(); floats() syncs once.

    Reads that pick items by value (Cond.select, the schedule's matrix) are the backward
    simulation's and the teacher mix's own, not checks or logs: they are not counted.
    """
    reads = []
    for name in ("item", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name):
            caller = sys._getframe(1).f_code
            if "/trainers/" in caller.co_filename and caller.co_name not in ("select", "matrix"):
                reads.append((_name, caller.co_name))
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    state = toy_state(critic_updates=3, grad_accum=2)
    logs = dmd_cycle(state, lambda: make_cond(4))
    assert reads == [("__bool__", "verify")]
    reads.clear()
    logs.floats()
    assert reads == [("tolist", "floats")]


def test_cycle_logs_average_micro_batches_then_updates():
    t = torch.tensor
    logs = CycleLogs(
        fake=[([t(1.0), t(2.0)], t(3.0)), ([t(4.0), t(5.0)], t(6.0))],
        generator=[{"loss/generator": t(1.0), "dm/grad_norm": t(2.0)}, {"loss/generator": t(3.0), "dm/grad_norm": t(4.0)}],
        generator_norm=t(7.0, dtype=torch.float64),
        host={"lr/generator": 0.1, "step": 1.0},
    )
    assert logs.floats() == {"loss/generator": 2.0, "dm/grad_norm": 3.0, "grad_norm/generator": 7.0,
                             "loss/fake": 3.0, "grad_norm/fake": 4.5, "lr/generator": 0.1, "step": 1.0}
    assert list(logs.floats()) == ["loss/generator", "dm/grad_norm", "grad_norm/generator", "loss/fake",
                                   "grad_norm/fake", "lr/generator", "step"]
    assert CycleLogs().floats() == {}


@pytest.mark.slow  # importing diffusers alone takes 5-20 s on this machine
def test_with_the_real_flow_model_when_available():
    models = pytest.importorskip("trainers.models")
    base = models.FlowModel.build("micro", resolution=8, text_dim=4)
    teachers = TeacherSet.of(Teacher("base", base))
    cfg = DMDConfig(nfe=2, critic_updates=1, image_shape=(3, 8, 8))
    state = DMDState.from_base(teachers, teacher_schedule(teachers, nfe=2, switch_step=2), cfg)
    logs = dmd_cycle(state, lambda: make_cond(4, edits=2, shape=(3, 8, 8))).floats()
    assert logs["loss/generator"] == logs["loss/generator"]
