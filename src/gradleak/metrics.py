"""Scores of a reconstruction against the truth: MSE, PSNR, SSIM (torchmetrics) and label accuracy, each beside
what a guess gets, with a per-sample *leaked* verdict and re-identification.

For batches, reconstructions are first matched to the true images by optimal assignment (Hungarian, on
pairwise MSE), since an attack recovers a set of images with no meaningful order. Given the attacker's guesses
(``baselines.ImageGuesses``: mid-gray, the public mean image, a disjoint public set), every guess is scored the
same way, and a sample is *leaked* when the reconstruction beats the best guess by ``baselines.Margins`` in both
PSNR and SSIM. With a public set, the truth is also ranked among public images by similarity to its
reconstruction (``reidentification``; pixel space, and the feature space of a model the caller trained on public
data when it passes one).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from scipy.optimize import linear_sum_assignment

from gradleak.baselines import ImageGuesses, Margins, majority_label_accuracy
from gradleak.errors import ConfigError
from gradleak.observation import GroundTruth
from gradleak.reidentification import LINEUP, Embed, Reidentification, rank_in_lineup

#: public images per true sample whose SSIM is computed for the public-set baseline (the closest ones by MSE)
SSIM_CANDIDATES = 16


@dataclass(frozen=True)
class BaselineScores:
    """Each guess's per-sample PSNR and SSIM against the truth (truth order), and the best of them per sample."""

    psnr: dict[str, list[float]]
    ssim: dict[str, list[float]]
    #: accuracy of guessing the public set's majority class for every sample (``None`` without public labels)
    label_accuracy: float | None = None
    best_psnr: list[float] = field(init=False)
    best_ssim: list[float] = field(init=False)

    def __post_init__(self) -> None:
        n = len(next(iter(self.psnr.values())))
        object.__setattr__(self, "best_psnr", [max(v[i] for v in self.psnr.values()) for i in range(n)])
        object.__setattr__(self, "best_ssim", [max(v[i] for v in self.ssim.values()) for i in range(n)])

    def means(self) -> dict[str, dict[str, float]]:
        return {name: {"psnr": sum(self.psnr[name]) / len(self.psnr[name]),
                       "ssim": sum(self.ssim[name]) / len(self.ssim[name])} for name in self.psnr}

    def to_json(self) -> dict[str, object]:
        return {"psnr": self.psnr, "ssim": self.ssim, "best_psnr": self.best_psnr, "best_ssim": self.best_ssim,
                "label_accuracy": self.label_accuracy, "mean": self.means()}


@dataclass(frozen=True)
class Scores:
    """Per-sample scores in truth order; ``assignment[i]`` is the reconstruction matched to truth ``i``."""

    psnr: list[float]
    ssim: list[float]
    mse: list[float]
    label_correct: list[bool] | None
    assignment: list[int]
    #: the attacker's guesses scored the same way (``None``: scored without guesses)
    baselines: BaselineScores | None = None
    #: per sample: beats the best guess by the margins (``None`` without guesses)
    leaked: list[bool] | None = None
    margins: Margins = Margins()
    #: the truth's rank among public images, by space (``"pixels"``, ``"features"``)
    reidentification: dict[str, Reidentification] = field(default_factory=dict)

    def means(self) -> dict[str, float | None]:
        n = len(self.psnr)
        return {
            "psnr": sum(self.psnr) / n,
            "ssim": sum(self.ssim) / n,
            "mse": sum(self.mse) / n,
            "label_accuracy": None if self.label_correct is None else sum(self.label_correct) / n,
            "best_baseline_psnr": None if self.baselines is None else sum(self.baselines.best_psnr) / n,
            "best_baseline_ssim": None if self.baselines is None else sum(self.baselines.best_ssim) / n,
            "leaked": None if self.leaked is None else sum(self.leaked) / n,
            **{f"reid_top1_{space}": r.top1 for space, r in self.reidentification.items()},
        }

    def verdict(self) -> str:
        """One line: the leaked share beside the best guess, or "no leak"."""
        if self.leaked is None or self.baselines is None:
            return "no baselines: PSNR alone says nothing about a leak"
        m = self.means()
        share = f"{sum(self.leaked)}/{len(self.leaked)} samples leaked"
        line = (f"{share if any(self.leaked) else 'no leak'} (best guess {m['best_baseline_psnr']:.2f} dB, SSIM "
                f"{m['best_baseline_ssim']:.3f}; margins {self.margins.psnr_db:g} dB and {self.margins.ssim:g})")
        for space, r in self.reidentification.items():
            line += f"; re-identified {r.top1:.0%} of {len(r.ranks)} in {space} (chance {r.chance:.0%})"
        return line


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


def score_guesses(truth: torch.Tensor, guesses: ImageGuesses, public_labels: torch.Tensor | None = None,
                  truth_labels: torch.Tensor | None = None) -> BaselineScores:
    """PSNR and SSIM of every guess against each true image ``(B, C, H, W)``; for the public set, the best
    public image per true image (PSNR over all of them, SSIM over the ``SSIM_CANDIDATES`` closest)."""
    truth = truth.detach().cpu().float()
    b = len(truth)
    by_psnr: dict[str, list[float]] = {}
    by_ssim: dict[str, list[float]] = {}
    for name, image in guesses.constant.items():
        guess = image.unsqueeze(0).expand_as(truth)
        by_psnr[name] = psnr(guess, truth).tolist()
        by_ssim[name] = ssim(guess, truth).tolist()
    if len(guesses.public):
        mse = pairwise_mse(truth, guesses.public)  # (B, N)
        k = min(SSIM_CANDIDATES, len(guesses.public))
        closest = mse.topk(k, dim=1, largest=False).indices  # (B, k)
        pairs = ssim(guesses.public[closest.flatten()], truth.repeat_interleave(k, 0)).view(b, k)
        by_psnr["public set (best)"] = (10 * torch.log10(1.0 / mse.min(1).values.clamp_min(1e-30))).tolist()
        by_ssim["public set (best)"] = pairs.max(1).values.tolist()
    labels = None if truth_labels is None else majority_label_accuracy(truth_labels, public_labels)
    return BaselineScores(by_psnr, by_ssim, labels)


def leaked_images(psnr_values: list[float], ssim_values: list[float], baselines: BaselineScores,
                  margins: Margins = Margins()) -> list[bool]:
    """Per sample: the reconstruction beats the best guess by both margins (PSNR and SSIM)."""
    return [p >= bp + margins.psnr_db and s >= bs + margins.ssim
            for p, s, bp, bs in zip(psnr_values, ssim_values, baselines.best_psnr, baselines.best_ssim)]


def score(inputs: torch.Tensor, labels: torch.Tensor | None, truth: GroundTruth, *,
          guesses: ImageGuesses | None = None, public_labels: torch.Tensor | None = None,
          margins: Margins = Margins(), embed: Embed | None = None) -> Scores:
    """Score reconstructed ``inputs`` (and ``labels``) against ``truth``; shapes must agree. With the attacker's
    ``guesses`` (images), each guess is scored too and each sample judged leaked or not (``margins``); with a
    public set among them, the truth is ranked among up to ``LINEUP - 1`` public images (pixels, and ``embed``'s
    feature space when given)."""
    scores = _score(inputs, labels, truth)
    if guesses is None or truth.kind != "image":
        return scores
    baselines = score_guesses(truth.inputs, guesses, public_labels, truth.labels)
    reid: dict[str, Reidentification] = {}
    if len(guesses.public):
        matched, others = inputs.detach().cpu()[scores.assignment], guesses.public[: LINEUP - 1]
        reid["pixels"] = rank_in_lineup(matched, truth.inputs, others)
        if embed is not None:
            reid["features"] = rank_in_lineup(matched, truth.inputs, others, embed=embed, space="features")
    return replace(scores, baselines=baselines, leaked=leaked_images(scores.psnr, scores.ssim, baselines, margins),
                   margins=margins, reidentification=reid)


def _score(inputs: torch.Tensor, labels: torch.Tensor | None, truth: GroundTruth) -> Scores:
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
