"""The LeNet variant of Deep Leakage from Gradients (Zhu et al., 2019).

Three 5x5 convolutions of 12 channels with sigmoid activations and one linear layer. Sigmoid makes the
network twice differentiable everywhere, which is what lets L-BFGS match gradients to near-exact recovery.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.models.registry import MODELS


class LeNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        uniform_init: bool = True,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        side = (image_size + 1) // 2
        side = (side + 1) // 2
        self.classifier = nn.Linear(12 * side * side, num_classes)
        if uniform_init:
            # The DLG paper initialises every weight and bias from U(-0.5, 0.5).
            for p in self.parameters():
                nn.init.uniform_(p, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("lenet")
def lenet(
    in_channels: int = 3, num_classes: int = 10, image_size: int = 32, uniform_init: bool = True
) -> nn.Module:
    return LeNet(in_channels, num_classes, image_size, uniform_init)
