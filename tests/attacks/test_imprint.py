"""Robbing the Fed (Fowl et al. 2022): a batch of 64 real images and the sum of 8 clients, 128 bins."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.capture import load_capture, save_capture
from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.malicious import imprint_server, simulate_aggregate
from gradleak.metrics import score
from gradleak.observation import ModelSpec
from gradleak.victim import simulate


@pytest.fixture(scope="module")
def setting():
    ds = load_dataset("faces")
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    x, y = ds.batch(perm[:64].tolist())
    torch.manual_seed(0)
    server = imprint_server("mlp", in_channels=1, num_classes=ds.num_classes, image_size=32,
                            base_kwargs={"hidden": (32,)}, bins=128, seed=0)
    return ds, x, y, server


def _check(recon, truth) -> float:
    scores = score(recon.inputs, recon.labels, truth)
    exact = [p >= 40.0 for p in scores.psnr]
    claimed = recon.details["recovered"]
    for truth_index, ok in enumerate(exact):
        if ok:  # every true recovery is among the slots the attack flags as recovered
            assert claimed[scores.assignment[truth_index]]
    assert recon.details["occupied_bins"] <= 64
    return sum(exact) / len(exact)


def test_batch_of_64_one_client(setting, assert_leaks) -> None:
    ds, x, y, server = setting
    obs, truth = simulate(server.model_spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std,
                          model=server.build_model())
    recon = ATTACKS.build("imprint").reconstruct(obs)
    assert recon.inputs.shape == (64, 1, 32, 32)
    assert _check(recon, truth) >= 0.5
    # half the batch past mid-gray, the mean image and the closest of the 136 faces outside it
    private = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:64].tolist()
    assert_leaks(recon.inputs, recon.labels, truth, obs, ds.images[ds.disjoint_from(private)], share=0.5)


def test_sum_of_8_clients(setting, tmp_path) -> None:
    ds, x, y, server = setting
    batches = [(x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8]) for i in range(8)]
    obs, truth = simulate_aggregate(server.model_spec, batches, num_classes=ds.num_classes, mean=ds.mean,
                                    std=ds.std, model=server.build_model(), reduce="sum")
    assert obs.batch_size == 64 and obs.info["clients"] == 8
    loaded = load_capture(save_capture(obs, tmp_path / "aggregate.safetensors"))  # the capture path works too
    recon = ATTACKS.build("imprint").reconstruct(loaded)
    assert _check(recon, truth) >= 0.5


def test_needs_an_imprint_block() -> None:
    ds = load_dataset("digits")
    x, y = ds.batch([0, 1])
    obs, _ = simulate(ModelSpec("mlp", {"in_channels": 1, "num_classes": 10, "image_size": 32}), x, y,
                      num_classes=10, mean=ds.mean, std=ds.std)
    with pytest.raises(ConfigError, match="block.imprint"):
        ATTACKS.build("imprint").reconstruct(obs)


def test_config_names_the_model_the_attack_and_the_clients() -> None:
    from gradleak.experiment import ExperimentConfig, run_experiment

    config = ExperimentConfig(dataset="faces", batch_size=64, clients=8, model="imprint",
                              model_kwargs={"base": "mlp", "base_kwargs": {"hidden": [32]}, "bins": 128},
                              attack="imprint")
    result = run_experiment(config)
    assert result.observation.info["aggregate"] == "sum" and result.observation.info["clients"] == 8
    assert sum(p >= 40 for p in result.scores.psnr) >= 32
    assert sum(result.scores.leaked) >= 32  # beside mid-gray, the mean image and the faces outside the batch
    assert result.metrics["details"]["bins"] == 128
    with pytest.raises(ConfigError, match="clients"):
        ExperimentConfig(clients=2, protocol="fedavg")
