"""The malicious server: the model it sends, the secret it keeps, and aggregates of several clients."""

from __future__ import annotations

import pytest
import torch

from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.malicious import ImprintSecret, imprint_server, simulate_aggregate
from gradleak.observation import ModelSpec
from gradleak.victim import normalize, simulate


def test_sent_model_rebuilds_and_carries_the_secret() -> None:
    torch.manual_seed(0)
    server = imprint_server("lenet", in_channels=3, num_classes=10, image_size=32, bins=16, seed=3)
    rebuilt = server.model_spec.build().state_dict()  # by registry name, as a capture does
    for key in ("block.imprint.weight", "block.imprint.bias", "block.spread.weight"):
        assert torch.equal(rebuilt[key], server.weights[key])
    secret = server.secret
    assert secret.bins == 16 and secret.layer == "block.imprint"
    assert torch.all(secret.thresholds[1:] > secret.thresholds[:-1])
    assert abs(float(secret.measurement.norm()) - 1.0) < 1e-6
    other = imprint_server("lenet", in_channels=3, num_classes=10, image_size=32, bins=16, seed=4)
    assert not torch.allclose(other.secret.measurement, secret.measurement)


def test_victim_barely_notices_the_block() -> None:
    ds = load_dataset("faces")
    x, _ = ds.batch(list(range(0, 200, 25)))
    torch.manual_seed(0)
    server = imprint_server("convnet", in_channels=1, num_classes=2, image_size=32, base_kwargs={"width": 8},
                            bins=128)
    model = server.build_model().eval()
    xn = normalize(x, ds.mean, ds.std)
    with torch.no_grad():
        out, plain = model(xn), model.base(xn)
    assert (out - plain).norm() / plain.norm() < 0.05


def test_calibration_on_public_images_gives_balanced_bins() -> None:
    ds = load_dataset("digits")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(1))
    public, private = ds.images[perm[:1000]], ds.images[perm[1000:]]
    server = imprint_server("mlp", in_channels=1, num_classes=10, image_size=32, bins=4, public_images=public,
                            mean=ds.mean, std=ds.std)
    stat = normalize(private, ds.mean, ds.std).flatten(1).double() @ server.secret.measurement
    counts = torch.bucketize(stat, server.secret.thresholds[1:]).bincount(minlength=4)
    assert counts.min() > 0.15 * len(private)  # equal-mass bins would hold 25% each
    with pytest.raises(ConfigError, match="mean and std"):
        imprint_server("mlp", in_channels=1, num_classes=10, image_size=32, public_images=public)


def test_secret_from_weights_rejects_other_models() -> None:
    weights = ModelSpec("mlp", {"in_channels": 1, "image_size": 8}).build().state_dict()
    with pytest.raises(Exception, match="no 'block.imprint.weight'"):
        ImprintSecret.from_weights(weights)
    with pytest.raises(Exception, match="differ"):
        ImprintSecret.from_weights(weights, layer="net.1")


def test_aggregate_mean_is_the_gradient_of_all_images() -> None:
    ds = load_dataset("digits")
    x, y = ds.batch(list(range(12)))
    spec = ModelSpec("mlp", {"in_channels": 1, "num_classes": 10, "image_size": 32, "hidden": (16,)})
    torch.manual_seed(0)
    model = spec.build()
    batches = [(x[i * 4 : (i + 1) * 4], y[i * 4 : (i + 1) * 4]) for i in range(3)]
    mean_obs, truth = simulate_aggregate(spec, batches, num_classes=10, mean=ds.mean, std=ds.std, model=model,
                                         reduce="mean")
    sum_obs, _ = simulate_aggregate(spec, batches, num_classes=10, mean=ds.mean, std=ds.std, model=model)
    whole, _ = simulate(spec, x, y, num_classes=10, mean=ds.mean, std=ds.std, model=model)
    for key, value in whole.update.items():
        torch.testing.assert_close(mean_obs.update[key], value, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(sum_obs.update[key], 3 * value, rtol=1e-4, atol=1e-6)
    assert sum_obs.batch_size == 12 and sum_obs.info["aggregate"] == "sum"
    assert torch.equal(truth.inputs, x)
    with pytest.raises(ConfigError, match="reduce"):
        simulate_aggregate(spec, batches, num_classes=10, mean=ds.mean, std=ds.std, reduce="max")
