"""See-through-Gradients / GradInversion (Yin et al. 2021): batch label restoration, then squared-L2 gradient
matching with a BatchNorm-statistics prior, image priors and group consistency across restarts.

Labels come from the column-minimum rule (``labels.yin``). The BN prior (DeepInversion, Yin et al. 2020) pulls
the batch statistics of every BatchNorm input towards the running statistics of the model the server sent, so
it helps only when those hold the data's statistics (a model that has trained, as in FL after a few rounds);
in an untrained model they are 0 and 1. When the client's update carries its BatchNorm buffer change (a client
that sends its state dict: ``client_step(share_buffers=...)``), the reference is the client's own batch
statistics instead (``attacks.bn_statistics``), as Yin et al. and Hatamizadeh et al. (2022) assume. Group consistency runs several restarts and pulls each towards their
mean. Defaults as ``breaching`` keeps them (objective scale 1e-4, TV 1e-4, L2 1e-6, Adam 0.1 with cosine decay
and 50 warm-up steps, 20,000 iterations); BN 1e-4 and group 1e-5 are chosen to weigh as much as TV here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from gradleak.attacks.base import ATTACKS
from gradleak.observation import Observation
from gradleak.attacks.optimization import EngineConfig, OptimizationAttack


@dataclass
class GradInversion(OptimizationAttack):
    """L2 matching + BN statistics + TV + L2 + group consistency, batch label restoration (Yin et al. 2021)."""

    name: ClassVar[str] = "gradinversion"
    iterations: int = 20_000
    restarts: int = 4
    lr: float = 0.1
    label_rule: str = "yin"
    objective: str = "l2"
    objective_scale: float = 1e-4
    bn: float = 1e-4
    tv: float = 1e-4
    l2: float = 1e-6
    group: float = 1e-5
    warmup: int = 50
    extra_priors: dict[str, float] = field(default_factory=dict)
    patience: int = 0

    def engine(self, obs: Observation | None = None) -> EngineConfig:
        bn = self.bn if obs is None or has_batchnorm(obs) else 0.0  # a model without BN layers: no BN prior
        priors = {"tv": self.tv, "l2": self.l2, "bn": bn, "group": self.group, **self.extra_priors}
        return EngineConfig(
            iterations=self.iterations, restarts=self.restarts, optimizer="adam", lr=self.lr, signed_gradients=False,
            schedule="cosine", warmup=self.warmup, objective=self.objective, objective_scale=self.objective_scale,
            priors=priors, init="randn", box=True, patience=self.patience,
        )


def has_batchnorm(obs: Observation) -> bool:
    return any(k.endswith("running_mean") for k in obs.weights)


ATTACKS.register("gradinversion")(GradInversion)
