from __future__ import annotations

import math

import pytest
import torch

from gradleak.errors import ConfigError
from gradleak.metrics import match, psnr, score, ssim
from gradleak.observation import GroundTruth


def test_psnr_matches_its_definition() -> None:
    a = torch.full((1, 1, 8, 8), 0.5)
    b = a + 0.1  # MSE 0.01 -> 20 dB
    assert psnr(b, a).item() == pytest.approx(20.0, abs=1e-4)
    assert ssim(a.expand(1, 1, 8, 8).clone(), a).item() == pytest.approx(1.0)


def test_batch_is_matched_before_scoring(faces) -> None:
    x, y = faces.batch([0, 10, 20, 30])
    perm = [2, 0, 3, 1]
    noisy = (x[perm] + 0.01 * torch.randn_like(x)).clamp(0, 1)
    scores = score(noisy, y[perm], GroundTruth(x, y))
    assert scores.assignment == [1, 3, 0, 2]
    assert min(scores.psnr) > 35 and all(scores.label_correct)
    unmatched = psnr(noisy, x)
    assert unmatched.max() < 25  # scoring in the given order would be wrong
    m = scores.means()
    assert m["label_accuracy"] == 1.0 and math.isclose(m["psnr"], sum(scores.psnr) / 4)


def test_wrong_labels_and_shapes(faces) -> None:
    x, y = faces.batch([0, 150])
    s = score(x, 1 - y, GroundTruth(x, y))
    assert s.label_correct == [False, False] and s.means()["ssim"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"reconstruction has shape \(1, 1, 32, 32\)"):
        score(x[:1], None, GroundTruth(x, y))
    assert match(x, x) == [0, 1]
