"""Label leakage from returned gradients (Li et al. 2022): unprotected norm AUC >= 0.9, perturbation lowers it."""

import pytest
import torch

from gradleak.errors import DataError
from gradleak.split import (SplitDefense, cosine_attack_scores, leakage_auc, norm_attack_scores, train_split)


def _aucs(digits16, defense):
    run = train_split(digits16, cut=2, steps=150, positive_class=0, observe=256, seed=0, defense=defense)
    y = run.truth.labels
    known = int((y == 1).nonzero()[0])
    returned = run.observation.returned
    return leakage_auc(norm_attack_scores(returned), y), leakage_auc(cosine_attack_scores(returned, known), y)


def test_unprotected_binary_task_leaks_labels(digits16):
    norm, cosine = _aucs(digits16, SplitDefense())
    assert norm >= 0.9 and cosine >= 0.9


def test_gradient_perturbation_brings_auc_down(digits16):
    norm, cosine = _aucs(digits16, SplitDefense(gradient_noise=1.0))
    assert norm < 0.7 and cosine < 0.75


def test_scores_validate_their_input():
    with pytest.raises(DataError, match="known_positive"):
        cosine_attack_scores(torch.ones(3, 4), 5)
    with pytest.raises(DataError, match="both classes"):
        leakage_auc(torch.rand(4), torch.zeros(4, dtype=torch.long))
