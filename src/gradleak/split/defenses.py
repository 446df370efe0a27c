"""Split learning defenses: noise on the smashed data, NoPeek, and returned-gradient perturbation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradleak.errors import ConfigError


@dataclass(frozen=True)
class SplitDefense:
    """What the client (noise, NoPeek) and the label party (gradient perturbation) apply during training.

    ``smashed_noise``: std of Gaussian noise the client adds to the cut activations before sending them.
    ``nopeek``: weight of the distance-correlation loss between inputs and smashed data (Vepakomma et al. 2020).
    ``gradient_noise``: relative std for ``equalise_and_noise`` on the returned gradients (0 = off), a simpler
    stand-in for Marvell (Li et al. 2022) documented below.
    """

    smashed_noise: float = 0.0
    nopeek: float = 0.0
    gradient_noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("smashed_noise", "nopeek", "gradient_noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"split defense {name} must be a finite number >= 0, got {value!r}")

    @property
    def name(self) -> str:
        parts = [f"{k}={getattr(self, k):g}" for k in ("smashed_noise", "nopeek", "gradient_noise") if getattr(self, k)]
        return ",".join(parts) or "none"


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation (Szekely et al. 2007) between two batches, flattened per example.

    NoPeek (Vepakomma et al. 2020) adds it to the client's loss so the smashed data keep little of the input.
    """
    def centred(a: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(a.flatten(1), a.flatten(1))
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centred(x), centred(z)
    dcov_xz = (a * b).mean().clamp_min(0).sqrt()
    dvar = ((a * a).mean().sqrt() * (b * b).mean().sqrt()).clamp_min(1e-12).sqrt()
    return dcov_xz / dvar


def equalise_and_noise(grad: torch.Tensor, relative_std: float, generator: torch.Generator) -> torch.Tensor:
    """Rescale every example's returned gradient to the batch's mean norm, then add isotropic Gaussian noise of
    ``relative_std`` times that norm per coordinate-vector.

    Li et al. (2022) show the norm of the returned gradient separates the classes (norm attack) and its direction
    does too (cosine attack). Equal norms remove the first signal; noise comparable to the gradient hides the
    second. Marvell optimises the noise's covariance; this isotropic version is simpler and costs more accuracy
    for the same protection.
    """
    flat = grad.flatten(1)
    norms = flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    target = norms.mean()
    scale = relative_std * target / flat.shape[1] ** 0.5
    noise = torch.randn(flat.shape, generator=generator, dtype=flat.dtype) * scale
    return (flat / norms * target + noise).view_as(grad)
