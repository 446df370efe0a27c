from __future__ import annotations

import pytest
import torch

from gradleak.defenses.secure_aggregation import SecureAggregation
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, make_victim
from gradleak.observation import ModelSpec
from gradleak.victim import batch_gradient, normalize, simulate


def test_server_sees_the_mean_of_all_clients_updates(digits):
    torch.manual_seed(0)
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 32})
    model = spec.build()
    target_x, target_y = digits.batch([0, 1])
    others_x, others_y = digits.batch([2, 3, 4, 5, 6, 7])  # exactly the 3 other clients' batches
    obs, truth = simulate(spec, target_x, target_y, num_classes=10, mean=digits.mean, std=digits.std, model=model,
                          defense=SecureAggregation(clients=4), population=(others_x, others_y), seed=0)
    expected = None
    for ids in ([0, 1], [2, 3], [4, 5], [6, 7]):  # the sum does not depend on which client drew which pair
        x, y = digits.batch(ids)
        g = batch_gradient(model, normalize(x, digits.mean, digits.std), y)
        expected = g if expected is None else {k: expected[k] + g[k] for k in g}
    for k in expected:
        torch.testing.assert_close(obs.update[k], expected[k] / 4, rtol=1e-4, atol=1e-7)
    assert obs.batch_size == 2 and torch.equal(truth.inputs, target_x)  # the target's batch only
    assert obs.info["defense"]["settings"] == {"clients": 4}


def test_fedavg_clients_aggregate_weight_deltas():
    obs, _ = make_victim(ExperimentConfig(dataset="digits", indices=(0,), protocol="fedavg", local_steps=2,
                                          defense="secure_aggregation", defense_kwargs={"clients": 3}))
    plain, _ = make_victim(ExperimentConfig(dataset="digits", indices=(0,), protocol="fedavg", local_steps=2))
    assert obs.update_kind == "weight_delta"
    assert not torch.allclose(obs.update["classifier.bias"], plain.update["classifier.bias"])


def test_needs_other_clients(digits):
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 32})
    x, y = digits.batch([0])
    with pytest.raises(ConfigError, match="other clients"):
        simulate(spec, x, y, num_classes=10, mean=digits.mean, std=digits.std, defense=SecureAggregation(clients=2))
