"""The overhead benchmark's split of wall time: packing (trial lengths) vs the engine itself."""

import pytest

from benchmarks.sweep_overhead import zero_cost_makespan


def test_equal_trials_pack_without_loss():
    assert zero_cost_makespan([0, 0, 1, 1], [10, 10, 10, 10], slots=2) == 20


def test_a_long_last_trial_runs_alone_at_the_end():
    # Two short trials then a long one: the second slot idles while the long one finishes.
    assert zero_cost_makespan([0, 0, 5], [5, 5, 20], slots=2) == 25


def test_trials_start_in_their_recorded_order_whatever_the_input_order():
    assert zero_cost_makespan([2, 0, 1], [1, 4, 3], slots=2) == pytest.approx(4)
