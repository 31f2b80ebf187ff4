"""Tests of trainers/divergence.py: queued finiteness checks raise what immediate checks would.

Run: .venv/bin/python -m pytest tests/test_divergence.py -q
"""

import pickle

import pytest
import torch
from torch import nn

from trainers.divergence import DivergedError, FiniteChecks

torch.set_num_threads(1)


def test_all_finite_passes_and_nothing_queued_passes():
    checks = FiniteChecks(step=3)
    checks.add("loss", torch.tensor(1.5))
    checks.add("sample", torch.randn(4, 3))
    checks.add_parameters("model", nn.Linear(2, 2))
    checks.verify()
    FiniteChecks(step=0).verify()


def test_the_first_failing_check_in_queue_order_is_raised_with_its_value():
    checks = FiniteChecks(step=5)
    checks.add("fine", torch.tensor(0.0))
    checks.add("sample", torch.tensor([1.0, float("nan")]))  # not a scalar: no value shown
    checks.add("loss", torch.tensor(float("inf")))
    with pytest.raises(DivergedError) as info:
        checks.verify()
    assert (info.value.step, info.value.quantity, info.value.value) == (5, "sample", None)
    checks = FiniteChecks(step=1)
    checks.add("loss", torch.tensor(float("-inf"), requires_grad=True))
    with pytest.raises(DivergedError, match=r"generator step 1: loss is not finite \(-inf\)"):
        checks.verify()


def test_values_are_taken_when_queued():
    checks = FiniteChecks(step=0)
    value = torch.tensor(1.0)
    checks.add("loss", value)
    value.fill_(float("nan"))  # changed after the check was queued: the check saw 1.0
    checks.verify()


def test_parameters_are_named_and_seen_as_they_were_when_queued():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    checks = FiniteChecks(step=2)
    checks.add_parameters("student", model)
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")  # after queueing: not this check's concern
    checks.add_parameters("student", model)
    with torch.no_grad():
        model[1].bias.fill_(float("inf"))  # a one-element parameter: its value is shown
    checks.add_parameters("student", model)
    with pytest.raises(DivergedError) as info:
        checks.verify()
    assert info.value.quantity == "student parameter '0.weight'" and info.value.value is None
    last = FiniteChecks(step=2)
    last.add_parameters("fake score", model[1])
    with pytest.raises(DivergedError, match=r"fake score parameter 'bias' is not finite \(inf\)"):
        last.verify()


def test_diverged_error_survives_pickling():
    err = pickle.loads(pickle.dumps(DivergedError(4, "generator loss", float("nan"))))
    assert (err.step, err.quantity) == (4, "generator loss") and "generator step 4" in str(err)
