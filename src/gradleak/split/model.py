"""A small CNN in three conv blocks and a linear head, cut after block 1, 2 or 3 (split learning)."""

from __future__ import annotations

import torch
from torch import nn

from gradleak.errors import ConfigError


class SplitCNN(nn.Module):
    """Three conv blocks then a linear head; ``client(cut)`` / ``server(cut)`` are the two halves.

    Blocks keep the cut layer's activations larger than the input for block 1 and smaller after blocks 2-3, the
    usual setting of split learning attacks (Erdogan et al. 2022 cut a similar CNN after its first layers).
    """

    def __init__(self, channels: int = 1, size: int = 16, num_outputs: int = 10, width: int = 8) -> None:
        super().__init__()
        if size % 4:
            raise ConfigError(f"SplitCNN: image size must be a multiple of 4, got {size}")
        self.input_shape = (channels, size, size)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU()),
        ])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * (size // 4) ** 2, num_outputs))

    @staticmethod
    def check_cut(cut: int) -> None:
        if cut not in (1, 2, 3):
            raise ConfigError(f"split cut must be after block 1, 2 or 3, got {cut!r}")

    def client(self, cut: int) -> nn.Sequential:
        """The client's layers: blocks ``1..cut``."""
        self.check_cut(cut)
        return nn.Sequential(*self.blocks[:cut])

    def server(self, cut: int) -> nn.Sequential:
        """The server's layers: the remaining blocks and the head."""
        self.check_cut(cut)
        return nn.Sequential(*self.blocks[cut:], self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)
