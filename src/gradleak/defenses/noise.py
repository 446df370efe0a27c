"""Additive noise on the shared update, the defense Zhu et al. (2019, DLG, Sec. 5) evaluate: Gaussian noise of
standard deviation ``std``, or Laplacian noise of scale ``scale`` (std ``scale * sqrt(2)``), independent per
entry. Unlike DP-SGD nothing is clipped first, so no epsilon follows: the noise is calibrated to nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from gradleak.defenses.base import DEFENSES, ClientContext, Defense, Update, check_range, rand_like, randn_like


@dataclass
class GaussianNoise(Defense):
    """Add ``N(0, std^2)`` to every entry of the update."""

    name: ClassVar[str] = "gaussian"
    strength: ClassVar[str] = "std"
    std: float = 1e-2

    def validate(self) -> None:
        check_range("gaussian", "std", self.std, 0.0)

    def transform(self, update: Update, context: ClientContext) -> Update:
        if self.std == 0:
            return update
        return {k: v + self.std * randn_like(v, context.generator) for k, v in update.items()}


@dataclass
class LaplacianNoise(Defense):
    """Add ``Laplace(0, scale)`` to every entry of the update (inverse-CDF sampling from the seeded generator)."""

    name: ClassVar[str] = "laplacian"
    strength: ClassVar[str] = "scale"
    scale: float = 1e-2

    def validate(self) -> None:
        check_range("laplacian", "scale", self.scale, 0.0)

    def transform(self, update: Update, context: ClientContext) -> Update:
        if self.scale == 0:
            return update
        out: Update = {}
        for k, v in update.items():
            u = rand_like(v, context.generator) - 0.5  # in [-0.5, 0.5)
            noise = -self.scale * torch.sign(u) * torch.log1p(-2 * u.abs())
            out[k] = v + noise
        return out


DEFENSES.register(GaussianNoise.name)(GaussianNoise)
DEFENSES.register(LaplacianNoise.name)(LaplacianNoise)
