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


@pytest.mark.parametrize("settings", [{"irls_rounds": 0}, {"max_trials": 0}], ids=["paper-sampling", "irls-pairs"])
def test_batch_8_recovered_exactly_with_labels(settings: dict) -> None:
    obs, truth = _observe(8)
    recon = ATTACKS.build("spear", **settings).reconstruct(obs, seed=0)
    scores = score(recon.inputs, recon.labels, truth)
    assert recon.details["rank"] == 8
    assert all(recon.details["certified"])
    assert min(scores.psnr) >= 60.0
    assert all(scores.label_correct)


@pytest.mark.xfail(strict=False, reason="known defect, open: two runs in one process differ in the last bits "
                   "(about half the time, also at 1 thread; not tie order, argsorts are stable); source not yet found")
def test_same_seed_same_numbers() -> None:
    obs, _ = _observe(8)
    a = ATTACKS.build("spear", max_trials=0, irls_rounds=1).reconstruct(obs, seed=3)
    b = ATTACKS.build("spear", max_trials=0, irls_rounds=1).reconstruct(obs, seed=3)
    assert torch.equal(a.inputs, b.inputs)
    assert a.details["candidates"] == b.details["candidates"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="not yet met: batch 16 finds sparse directions but not all 16 single "
                   "columns (measured 0/16 certified, benchmarks/bench_exact.py)")
def test_batch_16_at_60_db_with_labels() -> None:
    obs, truth = _observe(16, hidden=(1024,))
    recon = ATTACKS.build("spear", irls_rounds=2).reconstruct(obs, seed=0)
    scores = score(recon.inputs, recon.labels, truth)
    assert sum(p >= 60.0 for p in scores.psnr) >= 0.99 * 16
    assert all(scores.label_correct)


def test_too_little_search_fills_and_does_not_certify() -> None:
    obs, truth = _observe(8)
    recon = ATTACKS.build("spear", max_trials=10, irls_rounds=0).reconstruct(obs, seed=0)
    assert recon.inputs.shape == truth.inputs.shape
    assert not any(recon.details["certified"])
    assert recon.details["not_separated"] == 8


def test_layer_narrower_than_batch_is_refused() -> None:
    obs, _ = _observe(8, hidden=(6,))
    with pytest.raises(ConfigError, match="units"):
        ATTACKS.build("spear").reconstruct(obs)
