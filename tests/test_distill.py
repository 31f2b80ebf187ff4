"""Tests of trainers/distill.py on the micro world: reporting, early stop, resume, divergence, CLI.

Run: .venv/bin/python -m pytest tests/test_distill.py -q   (the CLI test is marked slow)
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainers.distill import DivergedError, distill
from trainers.recipe import Recipe
from trainers.tinyworld.pretrain import MICRO_WORLD
from trainers.tinyworld.world import TinyWorld

ROOT = Path(__file__).resolve().parents[1]
# micro budget: every code path, a few hundred ms per run
MICRO = dict(batch_size=4, critic_updates=2, warmup_steps=2, eval_items=24, eval_items_quick=12)
REPORT_KEYS = ("score", "t2i_score", "edit_score", "adherence", "purity", "diversity", "samples_per_s",
               "t2i_score/text", "edit_score/mirror", "composition/text", "composition/edit_share",
               "loss/generator", "loss/fake", "grad_norm/generator", "lr/generator", "time/cycle_s",
               "step", "nfe", "wall_s")


def recipe(**fields) -> Recipe:
    return Recipe(**(MICRO | fields))


def test_reports_every_report_every_steps_and_a_final_one(micro_world):
    reports = []
    result = distill(recipe(steps=5, report_every=2), micro_world,
                     on_report=lambda step, metrics, save: reports.append((step, metrics)))
    assert [step for step, _ in reports] == [2, 4, 5]
    for step, metrics in reports:
        missing = [k for k in REPORT_KEYS if k not in metrics]
        assert not missing and metrics["step"] == step
    assert [m.get("final") for _, m in reports] == [None, None, 1.0]
    assert result.steps == 5 and not result.stopped_early and result.metrics == reports[-1][1]
    assert reports[-1][1]["composition/edit_share"] == pytest.approx(0.5)  # ratio 0.5 of B 4 is exact


def test_returning_true_stops_the_run(micro_world):
    steps = []
    result = distill(recipe(steps=10, report_every=3), micro_world,
                     on_report=lambda step, metrics, save: steps.append(step) or True)
    assert steps == [3] and result.steps == 3 and result.stopped_early


def test_resume_is_bit_for_bit(micro_world, tmp_path):
    r = recipe(steps=6, report_every=3, ema_decay=0.9, category_mix={"text": 2.0, "portrait": 1.0})
    straight = distill(r, micro_world)

    def checkpoint_and_stop(step, metrics, save):
        save(tmp_path / "ckpt")
        return True

    distill(r, micro_world, on_report=checkpoint_and_stop)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "ema", "fake", "recipe.yaml", "state.json", "state.safetensors", "student"]
    resumed = distill(r, micro_world, resume_from=tmp_path / "ckpt")
    assert resumed.steps == straight.steps == 6
    for (name, a), (_, b) in zip(straight.student.named_parameters(), resumed.student.named_parameters(),
                                 strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name  # the EMA student: weights + RNG + optimiser
    compositions = [{k: v for k, v in res.metrics.items() if k.startswith("composition/")}
                    for res in (straight, resumed)]
    assert compositions[0] == compositions[1] and "composition/landscape" not in compositions[0]
    assert resumed.metrics["score"] == straight.metrics["score"]
    with pytest.raises(ValueError, match=r"other values of \['lr_generator'\]"):
        distill(Recipe(**(r.model_dump() | {"lr_generator": 1e-3})), micro_world, resume_from=tmp_path / "ckpt")


class NaNTeacherWorld(TinyWorld):
    """The micro world with a poisoned specialist: a NaN real score must stop the run, not train on it."""

    def load_teachers(self):
        teachers = super().load_teachers()
        with torch.no_grad():
            next(teachers["text"].model.parameters()).fill_(float("nan"))
        return teachers


def test_divergence_raises_with_step_and_quantity(micro_checkpoints):
    world = NaNTeacherWorld(checkpoints=micro_checkpoints, **MICRO_WORLD)
    text_only = recipe(steps=3, teacher_switch_step=0, category_mix={"text": 1.0}, t2i_edit_ratio=1.0)
    with pytest.raises(DivergedError, match=r"generator step 0: real-score x0 \(teachers\) is not finite") as info:
        distill(text_only, world)
    assert (info.value.step, info.value.quantity) == (0, "real-score x0 (teachers)")


def test_fp16_is_refused_clearly(micro_world):
    with pytest.raises(ValueError, match="mixed_precision='fp16'"):
        distill(recipe(steps=1, mixed_precision="fp16"), micro_world)


@pytest.mark.slow  # a fresh interpreter imports torch + diffusers (5-20 s on this machine)
def test_cli_runs_a_micro_distillation(micro_checkpoints, tmp_path):
    world = [f"--world-option={k}={v}" for k, v in {"checkpoints": micro_checkpoints, **MICRO_WORLD}.items()]
    sets = [f"--set={k}={v}" for k, v in (MICRO | {"steps": 2}).items()]
    cmd = [sys.executable, "-m", "trainers.distill", *sets, *world, "--threads=1", "--save", str(tmp_path / "c")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["steps"] == 2 and 0.0 <= line["score"] <= 1.0
    assert (tmp_path / "c" / "student" / "config.json").is_file()
    bad = subprocess.run([*cmd[:3], "--set=no_such_field=1"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "no_such_field" in bad.stderr
