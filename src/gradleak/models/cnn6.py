"""CNN6 of R-GAP (Zhu & Blaschko, 2021): six bias-free convolutions with LeakyReLU(0.2) and a bias-free linear head.

Layer plan as in the paper's repository (``models/CNN6.py``): 4x4/2 conv to 12 channels (padding 2), then 3x3
convolutions 12->36 (stride 2), 36->36, 36->36, 36->64 (stride 2), 64->128; on 32x32 inputs the last feature
map is 128x5x5 = 3200 features. The paper's head has one output trained with a logistic loss; here the head has
``num_classes`` outputs and the victim uses cross-entropy like every other gradleak model. Weights use PyTorch's
default initialisation, which is what the paper's repository uses (seeded with ``torch.manual_seed``).
Bias-free layers and an invertible activation are what make every layer a solvable linear system.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.models.registry import MODELS

#: (out_channels, kernel, stride, padding) of the six convolutions.
CNN6_PLAN: tuple[tuple[int, int, int, int], ...] = (
    (12, 4, 2, 2),
    (36, 3, 2, 1),
    (36, 3, 1, 1),
    (36, 3, 1, 1),
    (64, 3, 2, 1),
    (128, 3, 1, 1),
)


class CNN6(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, slope: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = in_channels, image_size
        for c_out, k, s, p in CNN6_PLAN:
            layers += [nn.Conv2d(c_in, c_out, k, stride=s, padding=p, bias=False), nn.LeakyReLU(slope)]
            c_in, side = c_out, (side + 2 * p - k) // s + 1
        if side < 1:
            raise ValueError(f"CNN6 needs image_size >= 8, got {image_size}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in * side * side, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("cnn6")
def cnn6(in_channels: int = 3, num_classes: int = 10, image_size: int = 32, slope: float = 0.2) -> nn.Module:
    return CNN6(in_channels, num_classes, image_size, slope)
