"""What a trial asks Ray for (orchestrator/trial.py, orchestrator/workers.py), and the multi-worker driver's relay."""

from __future__ import annotations

import pytest
from sweep_helpers import MICRO_BASE, micro_spec

from orchestrator.trial import make_trainable
from orchestrator.workers import DRIVER_RESOURCES, make_worker_trainable, worker_layout
from orchestrator.yamlio import SpecError


def _request(trainable) -> dict:
    """The resources Tune reserves for each trial of `trainable` (its placement group's bundles, summed)."""
    factory = trainable._resources
    total: dict = {}
    for bundle in factory.bundles:
        for key, value in bundle.items():
            total[key] = total.get(key, 0) + value
    return total


def test_a_fractional_gpu_is_asked_for_as_is(tmp_path):
    spec = micro_spec(tmp_path, tmp_path, resources={"cpu": 2, "gpu": 0.25})
    assert _request(make_trainable(spec)) == {"CPU": 2.0, "GPU": 0.25}  # four trials share one GPU


def test_a_multi_worker_trial_holds_nothing_itself_and_splits_its_resources(tmp_path):
    spec = micro_spec(tmp_path, tmp_path, base=MICRO_BASE | {"batch_size": 16},
                      resources={"cpu": 16, "gpu": 8, "workers": 8}, budget={"trials": 4, "max_failures": 3})
    assert _request(make_worker_trainable(spec)) == {"memory": float(DRIVER_RESOURCES["memory"])}
    assert worker_layout(spec) == {"workers": 8, "cpu": 2.0, "gpu": 1.0, "max_failures": 3}


def test_a_batch_that_does_not_split_over_the_workers_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as err:
        micro_spec(tmp_path, tmp_path, base=MICRO_BASE | {"batch_size": 6}, resources={"cpu": 1, "workers": 4})
    rendered = [p.render(err.value.file) for p in err.value.problems]
    assert any("resources.workers: expected a divisor of every batch_size, found 4 (batch_size 6)" in r
               for r in rendered), rendered


# -- the driver's relay (orchestrator.workers._relay_reports), with a stand-in for the Train run ----------


class _Run:
    """What the relay needs of a TorchTrainer: fit(), which here puts what the Train callback would."""

    def __init__(self, relay, items, error=None):
        self.relay, self.items, self.error = relay, items, error

    def fit(self):
        for item in self.items:
            self.relay.put(item)
        if self.error:
            raise self.error


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_reported_divergence_is_returned_and_a_train_failure_raised(local_ray):
    from ray.util.queue import Queue

    from orchestrator.workers import DIVERGED_KEY, _relay_reports

    relay = Queue(actor_options={"num_cpus": 0})
    message = "training diverged at generator step 3: generator loss is nan"
    assert _relay_reports(_Run(relay, [({DIVERGED_KEY: message}, None)], RuntimeError("x")), relay) == message
    with pytest.raises(RuntimeError, match="worker group lost"):
        _relay_reports(_Run(relay, [], RuntimeError("worker group lost")), relay)
