"""The ConvNet of Inverting Gradients (Geiping et al., 2020): eight 3x3 conv-BN-ReLU blocks, width configurable.

Layout (w = width), as the paper's code (``inversefed.nn.models.ConvNet``, breaching's ``ConvNet``): blocks of
w, 2w, 2w, 4w, 4w, 4w channels, 3x3 max pool, blocks of 4w, 4w, 3x3 max pool, linear. At 32x32 the linear layer
reads 4w x 3 x 3 = 36w features (2304 at the paper's width 64; 2,904,970 parameters with 3 channels, 10 classes).
Until issue 25 this module had a third pool (a 256-wide linear layer at width 64): not the paper's network.
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.models.registry import MODELS


def _block(c_in: int, c_out: int, norm: str) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)]
    if norm == "batch":
        layers.append(nn.BatchNorm2d(c_out))
    elif norm == "group":
        layers.append(nn.GroupNorm(min(32, c_out), c_out))
    elif norm != "none":
        raise ValueError(f"norm must be 'batch', 'group' or 'none', got {norm!r}")
    layers.append(nn.ReLU())
    return layers


class ConvNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        width: int = 64,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        w = width
        plan = [(in_channels, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w), (4 * w, 4 * w)]
        layers: list[nn.Module] = []
        for c_in, c_out in plan:
            layers += _block(c_in, c_out, norm)
        layers.append(nn.MaxPool2d(3))
        layers += _block(4 * w, 4 * w, norm) + _block(4 * w, 4 * w, norm)
        layers.append(nn.MaxPool2d(3))
        self.features = nn.Sequential(*layers)
        side = image_size // 3 // 3
        if side < 1:
            raise ValueError(f"ConvNet needs image_size >= 9, got {image_size}")
        self.classifier = nn.Linear(4 * w * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("convnet")
def convnet(
    in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: int = 64, norm: str = "batch"
) -> nn.Module:
    return ConvNet(in_channels, num_classes, image_size, width, norm)
