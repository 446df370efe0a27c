"""A fully connected network: the simplest victim, and the one where analytic attacks are exact."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gradleak.models.registry import MODELS


class MLP(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        acts = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(width, h), acts[activation]()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@MODELS.register("mlp")
def mlp(
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    hidden: Sequence[int] = (256, 256),
    activation: str = "relu",
) -> nn.Module:
    return MLP(in_channels, num_classes, image_size, tuple(hidden), activation)
