"""Cocktail Party attack (Kariyappa et al. 2023) on an FC-2 network over real bundled photos."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.metrics import score
from gradleak.observation import ModelSpec
from gradleak.victim import simulate

pytestmark = pytest.mark.numerics  # rank/span decisions, exact recovery: .ci/run runs these on two CPU paths


@lru_cache(maxsize=1)
def _photos():
    return load_dataset("photos", size=32)


@lru_cache(maxsize=None)
def _observe(batch: int = 64, hidden: int = 512, repeat_first: bool = False, model: str = "mlp"):
    """A seeded FedSGD observation of a random batch of bundled photos (cached: observations are immutable)."""
    ds = _photos()
    idx = torch.randperm(len(ds.images), generator=torch.Generator().manual_seed(0))[:batch].tolist()
    if repeat_first:
        idx[1] = idx[0]
    x, y = ds.batch(idx)
    kwargs = {"in_channels": 3, "num_classes": ds.num_classes}
    if model == "mlp":
        kwargs.update(image_size=32, hidden=(hidden,))
    spec = ModelSpec(model, kwargs)
    return simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std, seed=0)


def _mean_image_psnr(truth) -> float:
    """PSNR of filling every slot with the batch's own mean image (a baseline that even peeks at the truth)."""
    guess = truth.inputs.mean(0, keepdim=True).expand_as(truth.inputs).clone()
    return sum(score(guess, None, truth).psnr) / len(truth.inputs)


def test_batch_64_beats_the_mean_image_by_a_clear_margin(assert_leaks) -> None:
    obs, truth = _observe(64)
    recon = ATTACKS.build("cocktail").reconstruct(obs, seed=0)
    psnr = score(recon.inputs, None, truth).psnr
    # a quarter of the batch past mid-gray and the public mean image by 3 dB and 0.1 SSIM (64 of the 100 photos
    # cover all ten pictures: no crop of another picture is left for a public set)
    assert_leaks(recon.inputs, None, truth, obs, share=0.25)
    assert recon.inputs.shape == truth.inputs.shape
    assert sum(psnr) / 64 >= _mean_image_psnr(truth) + 5.0
    assert sum(v >= 20.0 for v in psnr) >= 16  # a quarter of the batch recognisable, not just a better average


def test_same_seed_same_images() -> None:
    obs, _ = _observe(32)
    attack = ATTACKS.build("cocktail", iters=20)
    first = attack.reconstruct(obs, seed=3).inputs
    assert torch.equal(first, attack.reconstruct(obs, seed=3).inputs)


def test_without_the_bias_gradient_scale_bias_is_refused_and_standardize_runs() -> None:
    obs, truth = _observe(16)
    weight_only = obs.with_update({k: v for k, v in obs.update.items() if k != "net.1.bias"})
    with pytest.raises(ConfigError, match="standardize"):
        ATTACKS.build("cocktail").reconstruct(weight_only)
    recon = ATTACKS.build("cocktail", scale="standardize").reconstruct(weight_only, seed=0)
    assert recon.inputs.shape == truth.inputs.shape
    assert 0.0 <= float(recon.inputs.min()) and float(recon.inputs.max()) <= 1.0


def test_layer_narrower_than_batch_is_refused() -> None:
    obs, _ = _observe(64, hidden=32)
    with pytest.raises(ConfigError, match="units"):
        ATTACKS.build("cocktail").reconstruct(obs)


def test_repeated_input_is_refused_as_rank_deficient() -> None:
    obs, _ = _observe(16, repeat_first=True)
    with pytest.raises(ConfigError, match="rank"):
        ATTACKS.build("cocktail").reconstruct(obs)


def test_network_without_fully_connected_input_is_refused() -> None:
    obs, _ = _observe(8, model="lenet")
    with pytest.raises(ConfigError, match="fully connected"):
        ATTACKS.build("cocktail").reconstruct(obs)


@pytest.mark.parametrize("bad", [{"domain": "fourier"}, {"fun": "tanh"}, {"scale": "minmax"}, {"iters": -1}])
def test_bad_settings_are_refused(bad: dict) -> None:
    obs, _ = _observe(8)
    with pytest.raises(ConfigError):
        ATTACKS.build("cocktail", **bad).reconstruct(obs)
