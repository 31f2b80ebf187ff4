"""Tests of trainers/evaluate.py on the micro world: common random numbers, prefix stability, teacher@50.

Run: .venv/bin/python -m pytest tests/test_evaluate.py -q
"""

import math

import pytest
import torch

from trainers.evaluate import (
    EDIT,
    T2I,
    EvalConfig,
    build_eval_set,
    evaluate,
    evaluate_teacher,
    student_generator,
    teacher_generator,
)
from trainers.sampling import StudentScheduler, euler_sample, timesteps

SMALL = EvalConfig(items=24, samples_per_prompt=2, batch_size=16)


@pytest.fixture()
def teachers(micro_world):
    return micro_world.load_teachers()


def recording(generate, seen: list):
    """Wrap a generator to record the noise it is given (initial and every re-noising)."""

    def wrapped(eps, cond, renoise):
        seen.append(("eps", eps.clone()))
        return generate(eps, cond, lambda k: seen.append((k, renoise(k).clone())) or seen[-1][1])

    return wrapped


def test_common_random_numbers(micro_world, teachers):
    base, text = teachers["base"].model, teachers["text"].model
    first = evaluate(micro_world, student_generator(base, StudentScheduler(4)), SMALL)
    again = evaluate(micro_world, student_generator(base, StudentScheduler(4)), SMALL)
    scores = {k: v for k, v in first.items() if k not in ("samples_per_s", "eval_s")}
    assert scores == {k: again[k] for k in scores}  # same model ⇒ identical scores
    seen_base, seen_text = [], []
    evaluate(micro_world, recording(student_generator(base, StudentScheduler(4)), seen_base), SMALL)
    evaluate(micro_world, recording(student_generator(text, StudentScheduler(4)), seen_text), SMALL)
    assert [k for k, _ in seen_base] == ["eps", 0, 1, 2] * 2  # 2 batches of 16, 12 items; 3 re-noisings
    for (ka, a), (kb, b) in zip(seen_base, seen_text, strict=True):
        assert ka == kb and torch.equal(a, b)  # two different models see identical noise
    assert not torch.equal(seen_base[0][1], seen_base[1][1])  # fresh noise differs from the initial noise


def test_benchmark_is_a_prefix_stable_function_of_items(micro_world):
    small = build_eval_set(micro_world, EvalConfig(items=24, samples_per_prompt=2))
    large = build_eval_set(micro_world, EvalConfig(items=48, samples_per_prompt=2))
    assert len(small) == 24 and len(large) == 48
    for es in (small, large):
        assert {r["category"] for r in es.t2i_rows} == set(micro_world.categories)
        assert {r["edit_type"] for r in es.edit_rows} == set(micro_world.edit_types)
    assert large.t2i_rows[: len(small.t2i_rows)] == small.t2i_rows
    assert large.edit_rows[: len(small.edit_rows)] == small.edit_rows
    for kind in (T2I, EDIT):
        i_small = [i for i, key in enumerate(small.keys) if key[0] == kind]
        i_large = [i for i, key in enumerate(large.keys) if key[0] == kind][: len(i_small)]
        assert [small.keys[i] for i in i_small] == [large.keys[i] for i in i_large]
        assert torch.equal(small.eps[i_small], large.eps[i_large])
        assert torch.equal(small.cond.text[i_small], large.cond.text[i_large])
        assert torch.equal(small.renoise(1, torch.tensor(i_small)), large.renoise(1, torch.tensor(i_large)))
    other_seed = build_eval_set(micro_world, EvalConfig(items=24, samples_per_prompt=2, seed=1))
    assert not torch.equal(other_seed.eps, small.eps)


def test_teacher_at_50_and_student_scores_are_complete(micro_world, teachers):
    scores = evaluate_teacher(micro_world, teachers["base"].model, nfe=50, config=SMALL, guidance_scale=3.0)
    for key in ("score", "t2i_score", "edit_score", "adherence", "purity", "diversity", "samples_per_s"):
        assert key in scores and math.isfinite(scores[key]), key
    for c in micro_world.categories:
        assert f"t2i_score/{c}" in scores
    for t in micro_world.edit_types:
        assert f"edit_score/{t}" in scores
    assert scores["score"] == pytest.approx((scores["t2i_score"] + scores["edit_score"]) / 2)
    assert 0.0 <= scores["score"] <= 1.0
    assert scores["score_se"] == pytest.approx(math.hypot(scores["t2i_score_se"], scores["edit_score_se"]) / 2)
    assert 0 < scores["score_se"] < 0.5


def test_too_many_items_is_a_clear_error(micro_world):
    with pytest.raises(ValueError, match="eval items=4096"):
        build_eval_set(micro_world, EvalConfig(items=4096))


def test_generators_are_the_samplers_on_the_benchmark_noise(micro_world, teachers):
    """The student generator is its scheduler fed the benchmark's re-noising; the teacher's is Euler with CFG."""
    from trainers.cond import guided_velocity

    es = build_eval_set(micro_world, SMALL)
    index = torch.arange(6)
    eps, cond = es.eps[index], es.cond.select(index)
    base = teachers["base"].model
    got = student_generator(base, StudentScheduler(3, 2.0))(eps, cond, lambda k: es.renoise(k, index))
    want = StudentScheduler(3, 2.0).sample(base, cond, eps, lambda k, idx: es.renoise(k, index[idx]))
    assert torch.equal(got, want)
    got = teacher_generator(base, 3, 2.5, 2.0)(eps, cond, None)
    want = euler_sample(lambda z, t: guided_velocity(base, z, t, cond, 2.5), eps, timesteps(3, 2.0))
    assert torch.equal(got, want)
