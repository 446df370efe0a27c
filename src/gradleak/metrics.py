"""Scores of a reconstruction against the truth: MSE, PSNR, SSIM (torchmetrics) and label accuracy.

For batches, reconstructions are first matched to the true images by optimal assignment (Hungarian, on
pairwise MSE), since an attack recovers a set of images with no meaningful order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from gradleak.errors import ConfigError
from gradleak.observation import GroundTruth


@dataclass(frozen=True)
class Scores:
    """Per-sample scores in truth order; ``assignment[i]`` is the reconstruction matched to truth ``i``."""

    psnr: list[float]
    ssim: list[float]
    mse: list[float]
    label_correct: list[bool] | None
    assignment: list[int]

    def means(self) -> dict[str, float | None]:
        n = len(self.psnr)
        return {
            "psnr": sum(self.psnr) / n,
            "ssim": sum(self.ssim) / n,
            "mse": sum(self.mse) / n,
            "label_accuracy": None if self.label_correct is None else sum(self.label_correct) / n,
        }


def pairwise_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(len(a), len(b))`` matrix of mean squared errors between images."""
    return torch.cdist(a.flatten(1).double(), b.flatten(1).double()).pow(2) / a[0].numel()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for pixels in [0, 1]."""
    # imported here, not at module level: torchmetrics' package import pulls in its text, audio and BERT metrics
    # (transformers, scipy.signal), seconds that every Ray worker and CLI process would pay without scoring
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(a.float(), b.float(), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), Gaussian window 11 (smaller for tiny images)."""
    side = min(a.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(
        a.float(), b.float(), data_range=1.0, reduction="none", kernel_size=kernel
    )


def match(recon: torch.Tensor, truth: torch.Tensor) -> list[int]:
    """Optimal one-to-one assignment of reconstructions to true images by MSE (finite inputs only)."""
    cost = pairwise_mse(truth, recon)
    if not torch.isfinite(cost).all():
        raise ConfigError("reconstruction or truth holds NaN or Inf (or values too large to compare); it cannot be "
                          "matched to the truth")
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return [int(c) for c in cols]


def score(inputs: torch.Tensor, labels: torch.Tensor | None, truth: GroundTruth) -> Scores:
    """Score reconstructed ``inputs`` (and ``labels``) against ``truth``; shapes must agree."""
    inputs = inputs.detach().cpu()
    if inputs.shape != truth.inputs.shape:
        raise ConfigError(
            f"reconstruction has shape {tuple(inputs.shape)} but the truth has {tuple(truth.inputs.shape)}"
        )
    for what, x in (("reconstruction", inputs), ("ground truth", truth.inputs)):
        if x.is_floating_point() and not torch.isfinite(x).all():  # the assignment and every score need numbers
            raise ConfigError(f"the {what} holds NaN or Inf; it cannot be scored")
    order = match(inputs, truth.inputs)
    matched = inputs[order]
    correct = None
    if labels is not None and truth.labels is not None:
        correct = (labels.detach().cpu()[order] == truth.labels).tolist()
    if truth.kind == "features":
        # feature vectors: PSNR over the truth's own range (no pixel scale exists); SSIM is undefined
        span = float(truth.inputs.max() - truth.inputs.min()) or 1.0
        err = ((matched - truth.inputs) ** 2).mean(1).double()
        return Scores(psnr=(10 * torch.log10(span**2 / err.clamp_min(1e-30))).tolist(),
                      ssim=[float("nan")] * len(order), mse=err.tolist(), label_correct=correct, assignment=order)
    return Scores(
        psnr=psnr(matched, truth.inputs).tolist(),
        ssim=ssim(matched, truth.inputs).tolist(),
        mse=((matched - truth.inputs) ** 2).flatten(1).mean(1).tolist(),
        label_correct=correct,
        assignment=order,
    )
