"""Split-learning leakage beside what a guess gets: inversions beside the attacker's image guesses, label
inference beside the majority-class prior, and only on networks that learned.

Smashed-data inversion is scored by ``gradleak.metrics.score`` beside mid-gray, the public mean image and the best
public image (``SplitRun.guesses``); a sample leaked when the reconstruction beats the best guess by
``Margins`` (3 dB and 0.1 SSIM). Label leakage (Li et al. 2022) is scored by AUC beside 0.5 and, as a decision,
by the accuracy of the labels the attacker infers (``infer_labels`` at the public positive rate) beside the
majority class of the same labels: it leaked when it removes ``LEAKED_LABEL_SHARE`` of the majority guess's
errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradleak.baselines import Margins, majority_label_accuracy
from gradleak.metrics import Scores, pairwise_mse, score
from gradleak.split.label_leakage import infer_labels, leakage_auc
from gradleak.split.simulation import SplitRun, errors_removed

#: inferred labels leak when they remove half the majority-class guess's errors (1-in-10 positives: accuracy
#: 0.95 where answering "negative" everywhere gets 0.90); the same bar as a network that learned
LEAKED_LABEL_SHARE = 0.5


def score_inversion(run: SplitRun, reconstruction: torch.Tensor, margins: Margins = Margins()) -> Scores:
    """PSNR/SSIM of the reconstruction beside the attacker's guesses, per-sample leaked verdict, re-identification."""
    return score(reconstruction, None, run.truth, guesses=run.guesses(), margins=margins)


def guess_reconstructions(run: SplitRun) -> dict[str, torch.Tensor]:
    """Each guess of ``SplitRun.guesses`` as a reconstruction of the whole batch (the public image is the best one
    per sample, an oracle choice): what an assertion of leakage must reject (a mutation check)."""
    guesses, truth = run.guesses(), run.truth.inputs
    out = {name: image.unsqueeze(0).expand_as(truth).clone() for name, image in guesses.constant.items()}
    if len(guesses.public):
        out["public set (best)"] = guesses.public[pairwise_mse(truth, guesses.public).argmin(1)].clone()
    return out


@dataclass(frozen=True)
class LabelLeakage:
    """One label attack on one binary batch: AUC (chance 0.5), inferred-label accuracy and the majority class's."""

    auc: float
    accuracy: float
    majority: float

    @property
    def errors_removed(self) -> float:
        return errors_removed(self.accuracy, self.majority)

    @property
    def leaked(self) -> bool:
        return self.errors_removed >= LEAKED_LABEL_SHARE

    def line(self) -> str:
        return (f"AUC {self.auc:.3f} (chance 0.5), inferred labels {self.accuracy:.3f} vs majority "
                f"{self.majority:.3f}: {'leaked' if self.leaked else 'no leak'}")


def score_label_leakage(run: SplitRun, scores: torch.Tensor) -> LabelLeakage:
    """Score a binary run's attack scores (higher = positive) against its labels, beside the majority class.

    The attacker's prior is the public labels' positive rate; the majority class is that of the public labels."""
    y = run.truth.labels
    rate = float(run.public_labels.float().mean()) if len(run.public_labels) else 0.0
    predicted = infer_labels(scores, rate)
    majority = majority_label_accuracy(y, run.public_labels if len(run.public_labels) else y)
    return LabelLeakage(leakage_auc(scores, y), float((predicted == y.cpu()).float().mean()), float(majority))
