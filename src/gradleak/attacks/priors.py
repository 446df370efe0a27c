"""Image priors (regularisers), looked up by name. Each maps a batch ``(B, C, H, W)`` to a scalar."""

from __future__ import annotations

import torch

from gradleak.registry import Registry

PRIORS: Registry[torch.Tensor] = Registry("prior")


@PRIORS.register("tv")
def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (Rudin et al. 1992; used by Geiping et al. 2020)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


@PRIORS.register("l2")
def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel value: pulls the candidate towards the data mean."""
    return x.pow(2).mean()
