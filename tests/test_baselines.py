"""Baselines: what a guess scores, and the leaked verdict that needs a margin over the best guess."""

from __future__ import annotations

import pytest
import torch

from gradleak.baselines import ImageGuesses, Margins, majority_label_accuracy
from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.inputs import ImageInput
from gradleak.metrics import leaked_images, psnr, score_guesses, ssim


@pytest.fixture(scope="module")
def photos():
    ds = load_dataset("photos", size=32)
    spec = ImageInput(tuple(ds.input_shape), ds.mean, ds.std)
    return ds, spec


def test_guesses_score_what_a_person_would_call_nothing_and_are_not_leaks(photos):
    ds, spec = photos
    truth, _ = ds.batch([0, 1, 2, 3])
    baselines = score_guesses(truth, ImageGuesses.of(spec, ds.images[4:]))
    assert set(baselines.psnr) == {"gray", "mean image", "public set (best)"}
    # a constant gray image scores 9-13 dB on photos: a PSNR in that range says nothing
    assert all(8 < p < 14 for p in baselines.psnr["gray"])
    # the best baseline is the best guess per sample
    for i in range(4):
        assert baselines.best_psnr[i] == max(v[i] for v in baselines.psnr.values())
    # each guess, submitted as a reconstruction, is never leaked
    for name, image in ImageGuesses.of(spec, ds.images[4:]).constant.items():
        guess = image.unsqueeze(0).expand_as(truth)
        assert not any(leaked_images(psnr(guess, truth).tolist(), ssim(guess, truth).tolist(), baselines)), name
    # the truth itself is
    assert all(leaked_images(psnr(truth, truth).clamp_max(100).tolist(), ssim(truth, truth).tolist(), baselines))


def test_public_set_baseline_is_the_closest_public_image(photos):
    ds, spec = photos
    truth, _ = ds.batch([0])
    # a public set holding a slightly noised copy of the truth: the baseline finds it
    near = (truth + 0.01 * torch.randn_like(truth)).clamp(0, 1)
    baselines = score_guesses(truth, ImageGuesses.of(spec, torch.cat([ds.images[5:20], near])))
    assert baselines.psnr["public set (best)"][0] == pytest.approx(float(psnr(near, truth)), abs=1e-3)
    assert baselines.ssim["public set (best)"][0] > 0.9


def test_margins_and_label_prior_are_validated_and_stated():
    with pytest.raises(ConfigError, match="psnr_db"):
        Margins(psnr_db=-1)
    with pytest.raises(ConfigError, match="rouge1"):
        Margins(rouge1=float("nan"))
    assert majority_label_accuracy(torch.tensor([1, 1, 2, 3]), torch.tensor([1, 1, 1, 0, 2])) == 0.5
    assert majority_label_accuracy(torch.tensor([1]), None) is None
