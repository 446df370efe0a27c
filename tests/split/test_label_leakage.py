"""Label leakage from returned gradients (Li et al. 2022) on a binary task (digit 0 vs the rest, 1 in 10
positive) that the network learned, each attack beside the majority class; the gradient perturbation beside a
positive control of the same size (300 SGD steps at lr 0.01, 256 held-out examples observed)."""

import pytest
import torch

from gradleak.errors import DataError
from gradleak.split import (SplitDefense, cosine_attack_scores, infer_labels, leakage_auc, norm_attack_scores,
                            score_label_leakage, train_split)

BINARY = dict(cut=2, steps=300, lr=0.01, positive_class=0, observe=256, seed=0)


def _attacks(run):
    returned = run.observation.returned
    known = int((run.truth.labels == 1).nonzero()[0])  # the one positive the cosine attacker knows
    return {"norm": score_label_leakage(run, norm_attack_scores(returned)),
            "cosine": score_label_leakage(run, cosine_attack_scores(returned, known))}


@pytest.fixture(scope="module")
def plain(digits16):
    return train_split(digits16, **BINARY)


@pytest.fixture(scope="module")
def perturbed(digits16):
    return train_split(digits16, **BINARY, defense=SplitDefense(gradient_noise=16.0))


def test_cosine_attack_infers_labels_beyond_the_majority_class_on_a_network_that_learned(plain, assert_learned):
    """Measured: accuracy 0.994 (majority 0.909); cosine AUC 1.000, inferred labels 1.000 vs majority 0.910."""
    assert_learned(plain)
    cosine = _attacks(plain)["cosine"]
    print(f"undefended: accuracy {plain.test_accuracy:.3f}; cosine {cosine.line()}")
    assert cosine.leaked and cosine.auc >= 0.9


def test_norm_attack_ranks_positives_above_chance_on_a_network_that_learned(plain, assert_learned):
    """Measured: norm AUC 0.872; its inferred labels (0.883) do not beat the majority class (0.910): on a network
    that fits the task, the norm separates the classes less than on the less-fitted one the README once
    reported (0.987)."""
    assert_learned(plain)
    norm = _attacks(plain)["norm"]
    print(f"undefended: norm {norm.line()}")
    assert norm.auc >= 0.8


def test_gradient_perturbation_16_learns_and_stops_both_label_attacks(plain, perturbed, assert_learned):
    """Measured: perturbed accuracy 0.987 (majority 0.909); cosine AUC 0.570, inferred labels 0.844; norm AUC
    0.496, 0.852; both under the majority class's 0.910. At strength 4 the cosine attack keeps AUC 0.85 (seed 0)
    and leaks at seed 1 (README)."""
    assert_learned(plain)
    control = _attacks(plain)["cosine"]
    assert control.leaked, f"positive control: cosine {control.line()}"
    assert_learned(perturbed)
    attacks = _attacks(perturbed)
    for name, leak in attacks.items():
        print(f"perturbation 16: accuracy {perturbed.test_accuracy:.3f}; {name} {leak.line()}")
    assert not any(leak.leaked for leak in attacks.values())
    assert all(leak.auc < 0.7 for leak in attacks.values())


def test_the_label_claims_fail_when_the_attack_returns_a_guess(plain):
    """Mutation check: scores that carry nothing (constant, or random draws) fail the claims above."""
    n = len(plain.truth.labels)
    guesses = {"constant": torch.zeros(n), "random": torch.rand(n, generator=torch.Generator().manual_seed(0))}
    for name, scores in guesses.items():
        leak = score_label_leakage(plain, scores)
        assert not leak.leaked and leak.auc < 0.8, f"the guess {name!r} passed: {leak.line()}"


def test_inferred_labels_follow_the_prior():
    scores = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.2])
    assert infer_labels(scores, 0.4).tolist() == [1, 0, 0, 1, 0]
    assert infer_labels(scores, 0.0).tolist() == [0] * 5
    with pytest.raises(DataError, match="positive_rate"):
        infer_labels(scores, 1.5)


def test_scores_validate_their_input():
    with pytest.raises(DataError, match="known_positive"):
        cosine_attack_scores(torch.ones(3, 4), 5)
    with pytest.raises(DataError, match="both classes"):
        leakage_auc(torch.rand(4), torch.zeros(4, dtype=torch.long))
