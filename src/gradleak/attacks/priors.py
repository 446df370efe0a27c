"""Image priors (regularisers), looked up by name: adding one touches no attack.

A prior has a ``kind`` that tells the engine what it needs:

- ``"image"``: ``prior(x)`` on one restart's candidate batch ``(..., B, C, H, W)`` (normalised space) -> ``(...)``,
  one value per leading index (restarts scored together);
- ``"batchnorm"``: ``prior(stats)`` on the BatchNorm input statistics of that candidate, ``(..., C)``, and their
  reference (:class:`BatchNormStatistics`): the running statistics of the model the server sent or, when the
  client's update carries its BatchNorm buffer change, the client's own batch statistics
  (``attacks.bn_statistics``) -> ``(...)``;
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
    reference ``(mean, var)``: the running statistics stored in the weights the server sent, or the client's own
    batch statistics when its update carries them (then both variances are unbiased, as BatchNorm's
    ``running_var`` update)."""

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


@PRIORS.register("bn_standardized")
@_kind("batchnorm")
def standardized_batchnorm_statistics(stats: BatchNormStatistics) -> torch.Tensor:
    """The BN prior in the reference's own units, the same for any layer width or scale: per BatchNorm layer,
    the root-mean-square over channels of the mean's shift in reference standard deviations and of the variance
    ratio's distance to 1, ``sqrt(mean_c ((mu - ref_mu)^2 / ref_var)) + sqrt(mean_c (var / ref_var - 1)^2)``,
    summed over layers. The absolute form (``bn``, Yin et al. 2020) grows with the width and the activations'
    scale, so a weight measured on one model means little on another; this form is what Inverting Gradients adds
    when the update carries the client's statistics (an exact reference: a z-score of 1 is a large miss)."""
    total = torch.zeros(())
    for name, (mean, var) in stats.candidate.items():
        ref_mean, ref_var = stats.reference[name]
        scale = ref_var.clamp_min(1e-8)
        total = (total + ((mean - ref_mean).pow(2) / scale).mean(-1).add(1e-12).sqrt()
                 + (var / scale - 1.0).pow(2).mean(-1).add(1e-12).sqrt())
    return total


@PRIORS.register("group")
@_kind("restarts")
def group_consistency(xs: torch.Tensor) -> torch.Tensor:
    """Group consistency (Yin et al. 2021): mean squared distance of each restart to the restarts' mean, which
    is held fixed (detached) so each restart is pulled towards the consensus. Yin et al. register the restarts
    to each other before averaging; this pixel-wise mean does not (restarts of one observation start aligned)."""
    consensus = xs.detach().mean(dim=0, keepdim=True)
    return (xs - consensus).pow(2).flatten(1).mean(dim=1)
