"""The FedAvg attack replays the client's local steps exactly, and beats reading the delta as one gradient."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.optimization import EngineConfig, UnrolledMatcher, UpdateMatcher
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, make_victim, public_set
from gradleak.metrics import score
from gradleak.victim import normalize

FEDAVG = dict(dataset="photos", image_size=16, model="lenet", indices=(3, 17, 45, 88), protocol="fedavg",
              local_steps=5, local_batch_size=2, local_lr=0.1, leak_labels=True)


def test_unrolled_simulation_reproduces_the_clients_delta() -> None:
    obs, truth = make_victim(ExperimentConfig(**FEDAVG))  # type: ignore[arg-type]
    x = normalize(truth.inputs, obs.mean, obs.std)[None, None]
    y = truth.labels[None, None]
    unrolled = UnrolledMatcher([obs], EngineConfig(objective="cosine"), "cpu")
    one_gradient = UpdateMatcher([obs], EngineConfig(objective="cosine"), "cpu")
    assert float(unrolled.value_and_grad(x, y, False)[0]) < 1e-5
    assert float(one_gradient.value_and_grad(x, y, False)[0]) > 0.05


def test_needs_a_weight_delta() -> None:
    obs, _ = make_victim(ExperimentConfig(dataset="photos", image_size=16, model="lenet", indices=(3,)))
    with pytest.raises(ConfigError, match="weight_delta"):
        ATTACKS.build("fedavg", iterations=2).reconstruct(obs)


def test_beats_the_single_gradient_baseline() -> None:
    obs, truth = make_victim(ExperimentConfig(**FEDAVG))  # type: ignore[arg-type]
    settings = dict(iterations=150, tv=0.01, schedule="cosine")
    fedavg = ATTACKS.build("fedavg", **settings).reconstruct(obs, seed=0)
    baseline = ATTACKS.build("inverting", **settings).reconstruct(obs, seed=0)
    got = score(fedavg.inputs, fedavg.labels, truth).means()["psnr"]
    base = score(baseline.inputs, baseline.labels, truth).means()["psnr"]
    assert got is not None and base is not None and got > base + 1.0, (got, base)
    assert torch.isfinite(fedavg.trace).all()


def test_recovers_every_image_of_the_local_steps_past_every_guess(assert_leaks) -> None:
    """5 local SGD steps on mini-batches of 2 of a batch of 4 photos (16x16, LeNet): all four beat mid-gray, the
    mean image and the closest crop of another photo by 3 dB and 0.1 SSIM. Measured (600 steps, TV 0.05):
    20.21 / 28.45 / 23.23 / 20.16 dB against best guesses 13.69 / 17.88 / 17.48 / 12.82."""
    config = ExperimentConfig(**FEDAVG)  # type: ignore[arg-type]
    obs, truth = make_victim(config)
    recon = ATTACKS.build("fedavg", iterations=600, tv=0.05).reconstruct(obs, seed=0)
    assert_leaks(recon.inputs, recon.labels, truth, obs, public_set(config, obs)[0])
