"""Small real inputs shared by the defense tests: bundled digits on the DLG LeNet."""

from __future__ import annotations

import pytest
import torch

from gradleak.data import load_dataset
from gradleak.models import build_model
from gradleak.victim import normalize


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture()
def lenet_batch(digits):
    """A LeNet (seeded) and a normalised batch of 8 real digits with their labels."""
    torch.manual_seed(0)
    model = build_model("lenet", in_channels=1, num_classes=10, image_size=32)
    x, y = digits.batch(list(range(8)))
    return model, normalize(x, digits.mean, digits.std), y
