"""Label leakage from the gradients returned across the cut (Li et al. 2022, two-party split learning).

The non-label party (here the client, holding the features) receives d loss / d smashed for each example. For a
binary task with a rare positive class, positives get larger gradients (norm attack) and point the opposite way
from negatives (direction, or cosine, attack). Both give a score per example; AUC (scikit-learn) measures leakage.
"""

from __future__ import annotations

import torch
from sklearn.metrics import roc_auc_score

from gradleak.errors import DataError


def norm_attack_scores(returned: torch.Tensor) -> torch.Tensor:
    """Score = L2 norm of each example's returned gradient (higher = more likely positive)."""
    if returned.ndim < 2:
        raise DataError(f"returned gradients must be (N, ...), got shape {tuple(returned.shape)}")
    return returned.flatten(1).norm(dim=1)


def cosine_attack_scores(returned: torch.Tensor, known_positive: int) -> torch.Tensor:
    """Score = cosine similarity with the gradient of one example whose label (positive) the attacker knows."""
    if returned.ndim < 2 or not 0 <= known_positive < returned.shape[0]:
        raise DataError(f"known_positive {known_positive} out of range for returned gradients {tuple(returned.shape)}")
    flat = returned.flatten(1)
    return torch.nn.functional.cosine_similarity(flat, flat[known_positive : known_positive + 1], dim=1)


def leakage_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of the scores against the true binary labels (scoring only: the attack never sees them)."""
    y = labels.detach().cpu().numpy()
    if len(set(y.tolist())) != 2:
        raise DataError("leakage_auc needs both classes among the labels")
    return float(roc_auc_score(y, scores.detach().cpu().double().numpy()))


def infer_labels(scores: torch.Tensor, positive_rate: float) -> torch.Tensor:
    """Labels the attacker infers: the ``round(positive_rate * N)`` highest scores are called positive.

    ``positive_rate`` is the prior the attacker knows (the share of positives in public data), so the attack
    commits to as many positives as the prior predicts and its accuracy can be set beside the majority class."""
    if scores.ndim != 1:
        raise DataError(f"scores must be (N,), got shape {tuple(scores.shape)}")
    if not 0.0 <= positive_rate <= 1.0:
        raise DataError(f"positive_rate must lie in [0, 1], got {positive_rate}")
    k = round(positive_rate * len(scores))
    labels = torch.zeros(len(scores), dtype=torch.long)
    labels[scores.detach().cpu().double().topk(k).indices] = 1
    return labels
