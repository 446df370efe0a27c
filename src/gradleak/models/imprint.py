"""The imprint model of Robbing the Fed (Fowl et al., 2022): a base model behind a malicious "imprint" block.

The block reads the flattened normalised image ``x``, measures one statistic ``s = m . x`` (a fixed random
direction ``m`` of unit norm, or the mean brightness), and compares it with ``bins`` increasing thresholds
``t_j``: unit ``j`` is ``h_j = ReLU(s - t_j)``. It then adds ``spread * sum_j h_j`` back onto the image, where
``spread`` is a small random image, and hands the result to the base model. Because every unit feeds the rest of
the network through the *same* column, a sample's gradient reaches all units it switched on with the same
factor, so differences of consecutive rows of the block's gradient isolate the samples whose statistic falls
in one bin (see ``gradleak.attacks.imprint``). The small ``gain`` keeps the base model's behaviour nearly
unchanged, so the client sees nothing odd.

Thresholds are Gaussian quantiles ``N(statistic_mean, statistic_std)`` at probabilities ``1/bins, ...,
(bins-1)/bins`` (plus a first threshold far below, so every sample switches on unit 0): equal-mass bins when the
server's estimate of the statistic's distribution is right (``gradleak.malicious.calibrate_statistic``).
The block's parameters are set deterministically from ``seed``; the values also travel in the weights the
server sends, so a capture rebuilds and attacks without the seed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gradleak.models.registry import MODELS, build_model

MEASUREMENTS = ("random", "brightness")


class ImprintBlock(nn.Module):
    """``x -> x + spread * sum_j ReLU(m . x - t_j)``; ``imprint.weight`` rows are ``m``, ``imprint.bias`` is ``-t``."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        bins: int = 128,
        seed: int = 0,
        measurement: str = "random",
        statistic_mean: float = 0.0,
        statistic_std: float = 1.0,
        gain: float = 1e-3,
    ) -> None:
        super().__init__()
        if bins < 2:
            raise ValueError(f"the imprint block needs bins >= 2, got {bins}")
        if measurement not in MEASUREMENTS:
            raise ValueError(f"measurement must be one of {MEASUREMENTS}, got {measurement!r}")
        if not statistic_std > 0 or not gain > 0:
            raise ValueError(f"statistic_std and gain must be positive, got {statistic_std}, {gain}")
        self.input_shape = tuple(input_shape)
        num_pixels = math.prod(input_shape)
        self.imprint = nn.Linear(num_pixels, bins)
        self.spread = nn.Linear(bins, num_pixels, bias=False)
        generator = torch.Generator().manual_seed(seed)
        if measurement == "random":
            m = torch.randn(num_pixels, generator=generator)
            m = m / m.norm()
        else:
            m = torch.full((num_pixels,), 1.0 / num_pixels)
        probabilities = torch.arange(1, bins, dtype=torch.float64) / bins
        # no argument validation: it reads a value (.item()), which the meta device used to count parameters has not
        quantiles = torch.distributions.Normal(0.0, 1.0, validate_args=False).icdf(probabilities)
        thresholds = statistic_mean + statistic_std * torch.cat([torch.tensor([-12.0], dtype=torch.float64), quantiles])
        spread = gain * torch.randn(num_pixels, generator=generator)
        with torch.no_grad():
            self.imprint.weight.copy_(m.expand(bins, -1))
            self.imprint.bias.copy_(-thresholds.float())
            self.spread.weight.copy_(spread[:, None].expand(-1, bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hits = torch.relu(self.imprint(x.flatten(1)))
        return x + self.spread(hits).view_as(x)


class ImprintedModel(nn.Module):
    """A base model with an imprint block in front: what a malicious server sends instead of the base model."""

    def __init__(self, block: ImprintBlock, base: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(self.block(x))


@MODELS.register("imprint")
def imprint(
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int = 32,
    base: str = "convnet",
    base_kwargs: dict[str, Any] | None = None,
    bins: int = 128,
    seed: int = 0,
    measurement: str = "random",
    statistic_mean: float = 0.0,
    statistic_std: float = 1.0,
    gain: float = 1e-3,
) -> nn.Module:
    if base == "imprint":
        raise ValueError("the base of an imprint model cannot itself be 'imprint'")
    block = ImprintBlock((in_channels, image_size, image_size), bins, seed, measurement, statistic_mean,
                         statistic_std, gain)
    inner = build_model(base, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                        **(base_kwargs or {}))
    return ImprintedModel(block, inner)
