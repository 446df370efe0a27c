"""Label hiding drops last-layer label inference to chance (10 classes: 0.1), measured over 100 real digits."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import binom

from gradleak.attacks.labels import infer_labels
from gradleak.defenses.label_hiding import LabelHiding
from gradleak.errors import ConfigError
from gradleak.observation import ModelSpec
from gradleak.victim import simulate

TRIALS, CLASSES = 100, 10


def inference_accuracy(digits, defense, trials=TRIALS):
    """Correct label inferences over ``trials`` one-image rounds (a different digit and seed each)."""
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": CLASSES, "image_size": 32})
    torch.manual_seed(0)
    model = spec.build()
    correct = 0
    for i in range(trials):
        x, y = digits.batch([i * 7])
        obs, truth = simulate(spec, x, y, num_classes=CLASSES, mean=digits.mean, std=digits.std, defense=defense,
                              seed=i, model=model)
        correct += int(infer_labels(obs, "idlg").item() == truth.labels.item())
    return correct


def test_label_inference_drops_to_chance(digits):
    assert inference_accuracy(digits, None, trials=30) == 30  # the attack works without the defense
    hidden = inference_accuracy(digits, LabelHiding(mode="shuffle"))
    # two-sided binomial bound at chance (p = 0.1): outside it with probability < 1e-3
    low, high = binom.ppf(5e-4, TRIALS, 1 / CLASSES), binom.isf(5e-4, TRIALS, 1 / CLASSES)
    assert low <= hidden <= high, f"{hidden}/{TRIALS} correct: not chance level ({low:.0f}..{high:.0f})"


def test_withheld_head_leaves_nothing_to_infer(digits):
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": CLASSES, "image_size": 32})
    x, y = digits.batch([0])
    obs, _ = simulate(spec, x, y, num_classes=CLASSES, mean=digits.mean, std=digits.std,
                      defense=LabelHiding(mode="withhold"), seed=0)
    assert "classifier.weight" not in obs.update and "features.0.weight" in obs.update
    with pytest.raises(ConfigError, match="withholds 'classifier.weight'"):
        infer_labels(obs, "idlg")
    shuffled, _ = simulate(spec, x, y, num_classes=CLASSES, mean=digits.mean, std=digits.std,
                           defense=LabelHiding(), seed=0)
    plain, _ = simulate(spec, x, y, num_classes=CLASSES, mean=digits.mean, std=digits.std, seed=0)
    # only the head is touched, and its rows are a permutation of the true ones
    assert torch.equal(shuffled.update["features.0.weight"], plain.update["features.0.weight"])
    assert torch.equal(shuffled.update["classifier.bias"].sort().values, plain.update["classifier.bias"].sort().values)
