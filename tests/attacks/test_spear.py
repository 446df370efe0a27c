"""SPEAR (Dimitrov et al. 2024) on a ReLU MLP over real bundled photos."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.metrics import score
from gradleak.observation import ModelSpec
from gradleak.victim import simulate


def _observe(batch: int, hidden: tuple[int, ...] = (200,)):
    ds = load_dataset("photos", size=16)
    x, y = ds.batch(list(range(batch)))
    spec = ModelSpec("mlp", {"in_channels": 3, "num_classes": ds.num_classes, "image_size": 16, "hidden": hidden})
    torch.manual_seed(0)
    return simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std)


def test_batch_8_recovered_exactly_with_labels() -> None:
    obs, truth = _observe(8)
    recon = ATTACKS.build("spear", max_trials=20_000).reconstruct(obs, seed=0)
    scores = score(recon.inputs, recon.labels, truth)
    assert recon.details["rank"] == 8
    assert all(recon.details["certified"])
    assert min(scores.psnr) >= 60.0
    assert all(scores.label_correct)


def test_too_few_trials_fill_and_do_not_certify() -> None:
    obs, truth = _observe(8)
    recon = ATTACKS.build("spear", max_trials=10).reconstruct(obs, seed=0)
    assert recon.inputs.shape == truth.inputs.shape
    assert not any(recon.details["certified"])
    assert recon.details["not_separated"] == 8


def test_layer_narrower_than_batch_is_refused() -> None:
    obs, _ = _observe(8, hidden=(6,))
    with pytest.raises(ConfigError, match="units"):
        ATTACKS.build("spear").reconstruct(obs)
