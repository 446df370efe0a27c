"""Inverting Gradients (Geiping et al. 2020): cosine similarity of the whole update plus total variation,
signed Adam with step-size decay, pixels boxed to [0, 1].

Matching the direction of the update rather than its magnitude makes the attack work on trained and untrained
deep networks alike; the signed gradient and the box come from adversarial-attack practice. Defaults are those
of the authors' CIFAR recipe as kept in ``breaching`` (step 0.1, decay x0.1 at 3/8, 5/8, 7/8, TV 0.2 on the
mean-difference TV used here); the paper's ImageNet runs use 24,000 iterations and restarts.
Applied to a FedAvg weight delta this attack reads the delta as one gradient; ``fedavg`` replays the steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from gradleak.attacks.base import ATTACKS
from gradleak.observation import Observation
from gradleak.attacks.optimization import EngineConfig, OptimizationAttack


@dataclass
class InvertingGradients(OptimizationAttack):
    """Cosine + TV, signed Adam, step decay, box constraint (Geiping et al. 2020)."""

    name: ClassVar[str] = "inverting"
    iterations: int = 4_800
    restarts: int = 1
    lr: float = 0.1
    tv: float = 0.2
    objective: str = "cosine"
    layer_weights: Mapping[str, float] | None = None
    signed: bool = True
    schedule: Literal["constant", "step", "cosine"] = "step"
    warmup: int = 0
    init: Literal["randn", "rand", "zeros"] = "randn"
    box: bool = True
    extra_priors: dict[str, float] = field(default_factory=dict)
    patience: int = 0

    def engine(self, obs: Observation | None = None) -> EngineConfig:
        return EngineConfig(
            iterations=self.iterations, restarts=self.restarts, optimizer="adam", lr=self.lr,
            signed_gradients=self.signed, schedule=self.schedule, warmup=self.warmup, objective=self.objective,
            layer_weights=self.layer_weights, priors={"tv": self.tv, **self.extra_priors}, init=self.init,
            box=self.box, patience=self.patience, simulation=self.simulation(),
        )

    def simulation(self) -> Literal["gradient", "unrolled"]:
        return "gradient"


ATTACKS.register("inverting")(InvertingGradients)
