"""Images from a network's features: optimise inputs until a layer sees the given activations.

An analytic attack on a fully connected layer deep in a CNN (SPEAR, Dimitrov et al. 2024; Cocktail Party,
Kariyappa et al. 2023) recovers that layer's *inputs*, the flattened convolutional features, not the images.
Kariyappa et al. (2023, Sec. 5) turn recovered CNN embeddings into images by feature inversion (Mahendran &
Vedaldi 2015, "Understanding Deep Image Representations by Inverting Them"): minimise a distance between the
network's activations at that layer and the recovered ones, plus a total-variation prior, over the pixels.
The whole batch is optimised at once (a train-mode BatchNorm sees the batch it saw on the client), by Adam, with
pixels kept in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from gradleak.attacks.cocktail import total_variation
from gradleak.attacks.layer_io import module_io
from gradleak.errors import ConfigError

DISTANCES: tuple[str, ...] = ("l2", "cosine")


def layer_input(model: nn.Module, layer: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What ``layer`` reads when ``model`` runs on ``inputs``; the forward stops at the layer."""
    return module_io(model, layer, inputs)


def feature_distance(features: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-sample distance ``(N,)``: squared L2 relative to the target's norm, or ``1 - cos``."""
    f, t = features.flatten(1), target.flatten(1)
    if distance == "cosine":
        return 1 - nn.functional.cosine_similarity(f, t, dim=1, eps=1e-12)
    return ((f - t) ** 2).sum(1) / (t**2).sum(1).clamp_min(1e-12)


def invert_features(
    model: nn.Module,
    layer: nn.Module,
    target: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    shape: tuple[int, ...],
    *,
    iterations: int = 400,
    lr: float = 0.1,
    tv: float = 0.3,
    distance: str = "l2",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels ``(N, *shape)`` in [0, 1] whose normalised images make ``layer`` read ``target`` (``N x F``).

    Starts from the mean colour plus seeded noise (``generator``, on the CPU) and runs ``iterations`` Adam steps
    (learning rate cosine-annealed from ``lr``) on ``distance(layer input, target) + tv * TV(pixels)``, summed over the batch, clamping pixels to [0, 1]
    after each step. Runs where ``target`` lives (``model`` must be there too). Returns the pixels and the loss
    trace ``(iterations, 1)``.
    """
    if distance not in DISTANCES:
        raise ConfigError(f"feature inversion: distance must be one of {DISTANCES}, not {distance!r}")
    if iterations < 0 or not lr > 0 or tv < 0:
        raise ConfigError("feature inversion: iterations must be >= 0, lr > 0 and tv >= 0")
    dev = target.device
    mean, std = mean.to(dev, torch.float32), std.to(dev, torch.float32)
    target = target.to(torch.float32)
    n = target.shape[0]
    noise = torch.rand(n, *shape, generator=generator) - 0.5
    pixels = (mean + 0.1 * noise.to(dev)).clamp(0, 1).requires_grad_(True)
    opt = torch.optim.Adam([pixels], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iterations, 1))
    trace = torch.empty(iterations, 1)
    for it in range(iterations):
        features = layer_input(model, layer, (pixels - mean) / std)
        loss = feature_distance(features, target, distance).sum() + tv * total_variation(pixels).sum()
        (grad,) = torch.autograd.grad(loss, [pixels])  # no parameter gradients accumulate on the model
        pixels.grad = grad
        opt.step()
        schedule.step()
        with torch.no_grad():
            pixels.clamp_(0, 1)
        trace[it, 0] = loss.detach().cpu()
    return pixels.detach(), trace
