"""The price of a defense: test accuracy of a model trained with it, beside the same training without it.

Both runs share everything (data split, initial weights, batch draws, schedule) and the training step of
``training.train``, whose every step is ``defenses.defended_update``, the victim simulation's code path. So
the accuracy reported is that of the exact computation the attack was measured against. Epsilon, where a
defense has one, is Opacus's accountant for *this* training schedule (train-set size, batch size, steps).
Text models are measured the same way (``text.utility.text_defense_cost``: the same batch draws, defended update
and loop, ``training.defended_steps``), with perplexity or accuracy on held-out records; ``tradeoff`` reads its
accuracy column from ``measure_utility``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gradleak.data import load_dataset
from gradleak.defenses.base import Defense, Privacy, Schedule
from gradleak.errors import ConfigError
from gradleak.models import build_model
from gradleak.training import accuracy, split_indices, train


@dataclass(frozen=True)
class UtilityConfig:
    """A short fixed training schedule on a bundled dataset: ``steps`` SGD steps (momentum) of ``batch_size``
    on a seeded ``1 - test_fraction`` split, accuracy on the rest."""

    dataset: str = "digits"
    image_size: int = 32
    model: str = "lenet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    steps: int = 300
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    test_fraction: float = 0.25
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"utility training needs steps >= 1 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class UtilityResult:
    """Accuracy with the defense and without it (same schedule), and the privacy guarantee if any."""

    defense: str
    settings: dict[str, Any]
    accuracy: float
    baseline_accuracy: float
    privacy: Privacy | None
    train_size: int
    test_size: int
    config: UtilityConfig
    wall_time_s: float

    @property
    def epsilon(self) -> float | None:
        return None if self.privacy is None else self.privacy.epsilon

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["epsilon"] = self.epsilon
        out["delta"] = None if self.privacy is None else self.privacy.delta
        return out


def train_with_defense(
    defense: Defense | None, config: UtilityConfig = UtilityConfig()
) -> tuple[torch.nn.Module, float, Schedule]:
    """Train a fresh model (seeded init) with ``defense`` on the config's split; return it, its test accuracy and
    the schedule of the batches it drew (what ``defense.privacy`` accounts)."""
    ds = load_dataset(config.dataset, size=config.image_size)
    train_idx, test_idx = split_indices(len(ds), config.test_fraction, config.seed)
    c, h, _ = ds.input_shape
    torch.manual_seed(config.seed)
    model = build_model(
        config.model, in_channels=c, num_classes=config.num_classes or ds.num_classes, image_size=h,
        **config.model_kwargs,
    )
    schedule = train(model, ds, train_idx, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                     momentum=config.momentum, seed=config.seed, device=config.device, defense=defense)
    assert schedule is not None  # UtilityConfig refuses steps < 1
    return model, accuracy(model, ds, test_idx, device=config.device), schedule


def measure_utility(
    defense: Defense | None, config: UtilityConfig = UtilityConfig(), *, baseline_accuracy: float | None = None
) -> UtilityResult:
    """Test accuracy with ``defense`` beside the undefended baseline (trained here unless given)."""
    start = time.perf_counter()
    if baseline_accuracy is None:
        _, baseline_accuracy, _ = train_with_defense(None, config)
    _, acc, schedule = train_with_defense(defense, config)
    ds_len = len(load_dataset(config.dataset, size=config.image_size))
    return UtilityResult(
        defense="none" if defense is None else defense.name,
        settings={} if defense is None else defense.settings(),
        accuracy=acc,
        baseline_accuracy=baseline_accuracy,
        privacy=None if defense is None else defense.privacy(schedule),
        train_size=schedule.dataset_size,
        test_size=ds_len - schedule.dataset_size,
        config=config,
        wall_time_s=time.perf_counter() - start,
    )
