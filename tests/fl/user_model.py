"""A federated user's own model, known to gradleak only by its file path (``tests/fl/user_model.py:make_net``)."""

from __future__ import annotations

from torch import nn


def make_net(in_channels: int = 1, num_classes: int = 10, image_size: int = 32, **_: object) -> nn.Module:
    """Two sigmoid convolutions and a linear head, built from the settings every gradleak client passes."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 5, padding=2, stride=2), nn.Sigmoid(),
        nn.Conv2d(8, 8, 5, padding=2, stride=2), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(8 * (image_size // 4) ** 2, num_classes),
    )
