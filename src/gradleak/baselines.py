"""What an attacker produces *without* the update: the guesses every score stands beside.

A reconstruction's PSNR means little alone: a constant mid-gray image scores 10-12 dB on natural photos, more than
some published attacks on trained networks (Du et al. 2025 and Carletti et al. 2025, SoKs on gradient inversion;
"Privacy attack in FL is not easy", 2024). So each score is set beside the guesses an attacker could make from
what it knows without the update, and a sample counts as *leaked* only when the reconstruction beats the best of
them by a stated margin (``Margins``).

The guesses use what the attacker knows, never the truth: images: a constant mid-gray image, the public mean
image (the normalisation statistics the server sets), and the best image of a disjoint public set (the attacker's
auxiliary data: each true sample is scored against every public image and the best is kept, an oracle choice
that makes this baseline an upper bound on what picking a public image achieves); labels: the majority class of
the public labels (the prior). Text guesses (random draws from the leaked token bag, the bag in its most frequent
order) live with the text scores (``gradleak.text.metrics``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from gradleak.errors import ConfigError
from gradleak.inputs import ImageInput
from gradleak.metrics import pairwise_mse, psnr, ssim

#: public images each true sample is compared with for the public-set baseline (a seeded subset beyond that)
PUBLIC_IMAGES = 512
#: public images per true sample whose SSIM is computed (the closest ones by PSNR)
SSIM_CANDIDATES = 16


@dataclass(frozen=True)
class Margins:
    """How far a reconstruction must beat the best guess to count as leaked.

    3 dB of PSNR is half the error energy of the guess: visible to a person on every image size we tried. 0.1 of
    SSIM separates a reconstruction with the truth's structure from a blur of it (a mean image scores 0.0-0.3 on
    the bundled photos, recognisable reconstructions 0.5 and up). 0.2 of ROUGE-1 is a fifth of the record's words
    beyond what the token bag alone gives. Each is a setting: raise it for a stricter audit."""

    psnr_db: float = 3.0
    ssim: float = 0.1
    rouge1: float = 0.2

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"margin {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class ImageGuesses:
    """The attacker's guesses for one image batch: ``constant`` guesses (one image each, ``(C, H, W)``) and a
    ``public`` set ``(N, C, H, W)`` (empty when the attacker has none)."""

    constant: dict[str, torch.Tensor]
    public: torch.Tensor

    @classmethod
    def of(cls, inputs: ImageInput, public: torch.Tensor | None = None, *, seed: int = 0) -> ImageGuesses:
        """Mid-gray and the public mean image (``inputs.mean`` per channel), and up to ``PUBLIC_IMAGES`` images
        of ``public`` (pixels in [0, 1], disjoint from the private batch: the caller's promise)."""
        c, h, w = inputs.shape
        constant = {"gray": torch.full((c, h, w), 0.5),
                    "mean image": torch.tensor(inputs.mean).clamp(0, 1).view(c, 1, 1).expand(c, h, w).clone()}
        if public is None or len(public) == 0:
            return cls(constant, torch.empty(0, c, h, w))
        if tuple(public.shape[1:]) != (c, h, w):
            raise ConfigError(f"public images are {tuple(public.shape[1:])}, the private ones {(c, h, w)}")
        if len(public) > PUBLIC_IMAGES:
            keep = torch.randperm(len(public), generator=torch.Generator().manual_seed(seed))[:PUBLIC_IMAGES]
            public = public[keep.sort().values]
        return cls(constant, public.detach().cpu().float())


@dataclass(frozen=True)
class BaselineScores:
    """Each guess's per-sample PSNR and SSIM against the truth (truth order), and the best of them per sample."""

    psnr: dict[str, list[float]]
    ssim: dict[str, list[float]]
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
                "mean": self.means()}


def score_guesses(truth: torch.Tensor, guesses: ImageGuesses) -> BaselineScores:
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
        best_psnr = (10 * torch.log10(1.0 / mse.clamp_min(1e-30))).max(1).values
        k = min(SSIM_CANDIDATES, len(guesses.public))
        closest = mse.topk(k, dim=1, largest=False).indices  # (B, k)
        pairs = ssim(guesses.public[closest.flatten()], truth.repeat_interleave(k, 0)).view(b, k)
        by_psnr["public set (best)"] = best_psnr.tolist()
        by_ssim["public set (best)"] = pairs.max(1).values.tolist()
    return BaselineScores(by_psnr, by_ssim)


def leaked_images(psnr_values: list[float], ssim_values: list[float], baselines: BaselineScores,
                  margins: Margins = Margins()) -> list[bool]:
    """Per sample: the reconstruction beats the best guess by both margins (PSNR and SSIM)."""
    return [p >= bp + margins.psnr_db and s >= bs + margins.ssim
            for p, s, bp, bs in zip(psnr_values, ssim_values, baselines.best_psnr, baselines.best_ssim)]


def majority_label_accuracy(truth_labels: torch.Tensor, public_labels: torch.Tensor | None) -> float | None:
    """Accuracy of guessing the public set's most frequent class for every sample (``None`` without a public set)."""
    if public_labels is None or len(public_labels) == 0:
        return None
    majority = int(torch.mode(public_labels.cpu().long()).values)
    return float((truth_labels.cpu().long() == majority).float().mean())
