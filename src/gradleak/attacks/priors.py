"""Image priors (regularisers), looked up by name: adding one touches no attack.

A prior has a ``kind`` that tells the engine what it needs:

- ``"image"``: ``prior(x)`` on one restart's candidate batch ``(..., B, C, H, W)`` (normalised space) -> ``(...)``,
  one value per leading index (restarts scored together);
- ``"batchnorm"``: ``prior(stats)`` on the BatchNorm input statistics of that candidate, ``(..., C)``, and the
  running statistics of the model the server sent (:class:`BatchNormStatistics`) -> ``(...)``;
- ``"restarts"``: ``prior(xs)`` on all restarts ``(R, B, C, H, W)`` of one attack -> ``(R,)``: it couples the
  restarts, so the engine evaluates it outside the per-restart ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from gradleak.registry import Registry

PriorKind = Literal["image", "batchnorm", "restarts"]
PRIORS: Registry[torch.Tensor] = Registry("prior")


def prior_kind(prior: Callable[..., torch.Tensor]) -> PriorKind:
    """What the prior consumes (see the module docstring)."""
    return getattr(prior, "kind", "image")


def _kind(kind: PriorKind) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    def mark(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        fn.kind = kind  # type: ignore[attr-defined]
        return fn

    return mark


@dataclass(frozen=True)
class BatchNormStatistics:
    """Per BatchNorm module (by name): ``(mean, var)`` over the batch of its *input* for the candidate, and the
    running ``(mean, var)`` stored in the weights the server sent (the reference of the BN prior)."""

    candidate: dict[str, tuple[torch.Tensor, torch.Tensor]]
    reference: dict[str, tuple[torch.Tensor, torch.Tensor]]


@PRIORS.register("tv")
@_kind("image")
def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (Rudin et al. 1992; used by Geiping et al. 2020)."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(-4).mean(-1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(-4).mean(-1)
    return dx + dy


@PRIORS.register("l2")
@_kind("image")
def l2_norm(x: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel value: pulls the candidate towards the data mean (Yin et al. 2021, ``R_l2``)."""
    return x.pow(2).flatten(-4).mean(-1)


@PRIORS.register("bn")
@_kind("batchnorm")
def batchnorm_statistics(stats: BatchNormStatistics) -> torch.Tensor:
    """DeepInversion's feature-distribution prior (Yin et al. 2020), used by GradInversion (Yin et al. 2021):
    ``sum_l ||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2`` over BatchNorm layers.

    Only as good as the running statistics: in a model that never trained they are the defaults 0 and 1.
    """
    total = torch.zeros(())
    for name, (mean, var) in stats.candidate.items():
        ref_mean, ref_var = stats.reference[name]
        total = (total + torch.linalg.vector_norm(mean - ref_mean, dim=-1)
                 + torch.linalg.vector_norm(var - ref_var, dim=-1))
    return total


@PRIORS.register("group")
@_kind("restarts")
def group_consistency(xs: torch.Tensor) -> torch.Tensor:
    """Group consistency (Yin et al. 2021): mean squared distance of each restart to the restarts' mean, which
    is held fixed (detached) so each restart is pulled towards the consensus. Yin et al. register the restarts
    to each other before averaging; this pixel-wise mean does not (restarts of one observation start aligned)."""
    consensus = xs.detach().mean(dim=0, keepdim=True)
    return (xs - consensus).pow(2).flatten(1).mean(dim=1)
