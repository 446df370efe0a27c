"""What an optimisation attack asks of the engine: one frozen, validated set of hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gradleak.attacks.objectives import OBJECTIVES
from gradleak.attacks.priors import PRIORS
from gradleak.errors import ConfigError

Simulation = Literal["gradient", "unrolled"]


@dataclass(frozen=True)
class EngineConfig:
    """Hyperparameters of one optimisation attack. ``iterations`` counts objective evaluations (one
    double-backward each), the unit of compute for every optimizer.

    ``schedule``: ``"constant"``, ``"step"`` (x0.1 at 3/8, 5/8 and 7/8 of the iterations, Geiping et al. 2020)
    or ``"cosine"``; ``warmup`` iterations ramp the step size up linearly (Adam only). ``box`` keeps pixels in
    [0, 1] (clamped in the normalised space). ``patience`` > 0 stops when the summed objective has not improved
    by a relative ``min_improvement`` for that many iterations; ``tolerance`` stops when it falls below.
    ``objective_scale`` multiplies the gradient distance (priors are weighted relative to it).
    ``conv_backend``: CPU convolutions through oneDNN (``"mkldnn"``, PyTorch's default) or PyTorch's own
    kernels (``"native"``); the two sum in different orders, so the choice is a setting, never timed.
    """

    iterations: int = 300
    restarts: int = 1
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float = 1.0
    line_search: Literal["strong_wolfe"] | None = "strong_wolfe"
    history_size: int = 100
    signed_gradients: bool = False
    schedule: Literal["constant", "step", "cosine"] = "constant"
    warmup: int = 0
    objective: str = "l2"
    objective_scale: float = 1.0
    layer_weights: Mapping[str, float] | None = None
    priors: Mapping[str, float] = field(default_factory=dict)
    init: Literal["randn", "rand", "zeros"] = "randn"
    box: bool = False
    tolerance: float = 0.0
    patience: int = 0
    min_improvement: float = 1e-4
    simulation: Simulation = "gradient"
    checkpoint_every: int = 100
    conv_backend: Literal["mkldnn", "native"] = "mkldnn"

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.restarts < 1:
            raise ConfigError(f"iterations and restarts must be >= 1, got {self.iterations}, {self.restarts}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise ConfigError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("constant", "step", "cosine"):
            raise ConfigError(f"schedule must be 'constant', 'step' or 'cosine', got {self.schedule!r}")
        if self.conv_backend not in ("mkldnn", "native"):
            raise ConfigError(f"conv_backend must be 'mkldnn' or 'native', got {self.conv_backend!r}")
        if self.init not in ("randn", "rand", "zeros"):
            raise ConfigError(f"init must be 'randn', 'rand' or 'zeros', got {self.init!r}")
        if self.simulation not in ("gradient", "unrolled"):
            raise ConfigError(f"simulation must be 'gradient' or 'unrolled', got {self.simulation!r}")
        if not self.lr > 0 or not self.objective_scale > 0:
            raise ConfigError(f"lr and objective_scale must be positive, got {self.lr}, {self.objective_scale}")
        if self.warmup < 0 or self.patience < 0 or self.checkpoint_every < 1:
            raise ConfigError("warmup and patience must be >= 0 and checkpoint_every >= 1")
        OBJECTIVES.get(self.objective)
        for name in self.priors:
            PRIORS.get(name)

    def lr_at(self, i: int) -> float:
        """Step size of iteration ``i`` (0-based) under the schedule and warm-up."""
        factor = 1.0
        if self.schedule == "step":
            factor = 0.1 ** sum(i >= self.iterations * m for m in (3 / 8, 5 / 8, 7 / 8))
        elif self.schedule == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * i / self.iterations))
        if self.warmup and i < self.warmup:
            factor *= (i + 1) / self.warmup
        return self.lr * factor
