"""ResNet-18 (He et al., 2016): a stem, four stages of two BasicBlocks, global average pooling, a linear layer;
BatchNorm or GroupNorm.

Two stems, registered under two names so that a capture rebuilds either from ``(name, settings)``:

- ``resnet18``: the CIFAR layout (a 3x3 stride-1 stem, no pooling), for 32x32 inputs.
- ``resnet18-imagenet``: the ImageNet layout of the paper's Table 1 (a 7x7 stride-2 stem, then 3x3 stride-2 max
  pooling), for 128x128 to 224x224 inputs: 11,689,512 parameters at 1,000 classes, torchvision's ``resnet18``
  layer for layer. GradInversion (Yin et al. 2021) and Hatamizadeh et al. (2022) attack this network at 224x224.

GroupNorm is offered because BatchNorm couples the samples of a batch, which changes both the gradient an
attacker sees and what Opacus accepts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gradleak.models.registry import MODELS


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


STEMS: tuple[str, ...] = ("cifar", "imagenet")


def _stem(kind: str, in_channels: int, width: int, norm: str) -> nn.Sequential:
    """CIFAR: 3x3 stride 1 (the feature maps keep the input's size); ImageNet: 7x7 stride 2 and 3x3 stride-2 max
    pooling (a quarter of the input's side before the first stage; He et al. 2016, Table 1)."""
    if kind == "cifar":
        return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), _norm(norm, width), nn.ReLU())
    if kind == "imagenet":
        return nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False), _norm(norm, width),
                             nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
    raise ValueError(f"stem must be one of {STEMS}, got {kind!r}")


class ResNet18(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 64, norm: str = "batch",
                 stem: str = "cifar") -> None:
        super().__init__()
        self.stem = _stem(stem, in_channels, width, norm)
        stages: list[nn.Module] = []
        c_in = width
        for i, c_out in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(c_in, c_out, stride, norm), BasicBlock(c_out, c_out, 1, norm)]
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.classifier(F.adaptive_avg_pool2d(out, 1).flatten(1))


@MODELS.register("resnet18")
def resnet18(
    in_channels: int = 3, num_classes: int = 10, image_size: int = 32, width: int = 64, norm: str = "batch"
) -> nn.Module:
    del image_size  # global pooling makes the network size-agnostic
    return ResNet18(in_channels, num_classes, width, norm)


@MODELS.register("resnet18-imagenet")
def resnet18_imagenet(
    in_channels: int = 3, num_classes: int = 10, image_size: int = 224, width: int = 64, norm: str = "batch"
) -> nn.Module:
    """The ImageNet layout: the stem and stages halve the side five times (224 -> 7x7 before pooling)."""
    del image_size  # global pooling makes the network size-agnostic
    return ResNet18(in_channels, num_classes, width, norm, stem="imagenet")
