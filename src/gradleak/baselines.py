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
order) live with the text scores (``gradleak.text.metrics``). ``gradleak.metrics`` scores the guesses beside
the reconstruction and gives the verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from gradleak.errors import ConfigError
from gradleak.inputs import ImageInput

#: public images each true sample is compared with for the public-set baseline (a seeded subset beyond that)
PUBLIC_IMAGES = 512


@dataclass(frozen=True)
class Margins:
    """How far a reconstruction must beat the best guess to count as leaked.

    3 dB of PSNR is half the error energy of the guess: visible to a person on every image size we tried. 0.1 of
    SSIM separates a reconstruction with the truth's structure from a blur of it (a mean image scores 0.0-0.3 on
    the bundled photos, recognisable reconstructions 0.5 and up). 0.2 of ROUGE-1 (or of ROUGE-2) is a fifth of the
    record's words (or word pairs) beyond what the token bag alone gives. Each is a setting: raise it for a stricter
    audit."""

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


def majority_label_accuracy(truth_labels: torch.Tensor, public_labels: torch.Tensor | None) -> float | None:
    """Accuracy of guessing the public set's most frequent class for every sample (``None`` without a public set)."""
    if public_labels is None or len(public_labels) == 0:
        return None
    majority = int(torch.mode(public_labels.cpu().long()).values)
    return float((truth_labels.cpu().long() == majority).float().mean())
