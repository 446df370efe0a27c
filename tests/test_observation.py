from __future__ import annotations

import dataclasses

import pytest
import torch

from gradleak.errors import CaptureError
from gradleak.inputs import ImageInput
from gradleak.observation import LocalTraining, ModelSpec


def test_build_model_carries_the_servers_weights(face_observation) -> None:
    obs, _ = face_observation
    model = obs.build_model()
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), obs.weights[name])
    assert model.training  # model_mode 'train' by default


def test_shape_mismatch_is_named(face_observation) -> None:
    obs, _ = face_observation
    bad = {**obs.update, "classifier.weight": torch.zeros(100, 10)}
    with pytest.raises(CaptureError, match=r"'classifier.weight' has shape \(100, 10\), model 'lenet' expects \(100, 768\)"):
        dataclasses.replace(obs, update=bad)


def test_unknown_update_key_and_missing_weight(face_observation) -> None:
    obs, _ = face_observation
    with pytest.raises(CaptureError, match="update key 'fc9.weight' is not a parameter"):
        dataclasses.replace(obs, update={**obs.update, "fc9.weight": torch.zeros(1)})
    weights = {k: v for k, v in obs.weights.items() if k != "features.0.weight"}
    with pytest.raises(CaptureError, match="weights are missing parameter 'features.0.weight'"):
        dataclasses.replace(obs, weights=weights)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_gradient_is_named(face_observation, value: float) -> None:
    obs, _ = face_observation
    g = obs.update["features.2.bias"].clone()
    g[3] = value
    with pytest.raises(CaptureError, match="update tensor 'features.2.bias' contains NaN or Inf"):
        obs.with_update({**obs.update, "features.2.bias": g})


def test_metadata_checks(face_observation) -> None:
    obs, _ = face_observation
    with pytest.raises(CaptureError, match=r"mean \(one per channel of 1\) must be a list of 1 numbers"):
        dataclasses.replace(obs, inputs=ImageInput((1, 32, 32), (0.5, 0.5, 0.5), (0.25,)))
    with pytest.raises(CaptureError, match="needs local_training"):
        dataclasses.replace(obs, update_kind="weight_delta")
    with pytest.raises(CaptureError, match="leaked labels must have shape"):
        dataclasses.replace(obs, labels=torch.tensor([1, 2]))
    with pytest.raises(CaptureError, match="local training needs integer steps >= 1"):
        LocalTraining(steps=0, lr=0.1, batch_size=1)
    with pytest.raises(CaptureError, match="unknown model 'lenet5'"):
        dataclasses.replace(obs, model_spec=ModelSpec("lenet5", {}))


def test_gradient_estimate_of_a_weight_delta(face_observation) -> None:
    obs, _ = face_observation
    delta = {k: -0.2 * 3 * v for k, v in obs.update.items()}
    fedavg = dataclasses.replace(obs, update=delta, update_kind="weight_delta",
                                 local_training=LocalTraining(steps=3, lr=0.2, batch_size=1))
    for k, v in fedavg.gradient_estimate().items():
        assert torch.allclose(v, obs.update[k], atol=1e-6)
