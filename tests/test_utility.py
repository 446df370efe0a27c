"""Utility: training with a defense goes through the victim's code path and costs what it should."""

from __future__ import annotations

import pytest

from gradleak.defenses import build_defense
from gradleak.defenses.dp import opacus_epsilon
from gradleak.defenses.base import Schedule
from gradleak.utility import UtilityConfig, measure_utility

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

CONFIG = UtilityConfig(dataset="digits", steps=60, batch_size=32)


@pytest.fixture(scope="module")
def baseline():
    return measure_utility(None, CONFIG)


def test_baseline_learns(baseline):
    assert baseline.accuracy == baseline.baseline_accuracy
    assert baseline.accuracy > 0.5  # 10 classes: chance is 0.1
    assert baseline.train_size + baseline.test_size == 1797


def test_heavy_noise_costs_accuracy_and_is_reported_beside_the_baseline(baseline):
    result = measure_utility(build_defense("gaussian", std=1.0), CONFIG, baseline_accuracy=baseline.accuracy)
    assert result.baseline_accuracy == baseline.accuracy
    assert result.accuracy < baseline.accuracy - 0.2
    assert result.epsilon is None


def test_dp_epsilon_is_for_the_training_schedule(baseline):
    defense = build_defense("dpsgd", noise_multiplier=1.0, max_grad_norm=1.0)
    result = measure_utility(defense, CONFIG, baseline_accuracy=baseline.accuracy)
    schedule = Schedule(result.train_size, 32, 60)  # Poisson batches of expected size 32, every step
    assert result.privacy.schedule == schedule
    assert result.epsilon == opacus_epsilon(1.0, schedule, 1e-5)
    assert 0.1 < result.accuracy <= 1.0
