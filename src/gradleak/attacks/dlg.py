"""DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020): L-BFGS on the squared-L2 gradient distance.

DLG optimises a dummy image and a soft dummy label jointly. iDLG first reads the label off the last
layer's gradient (batch size 1), then optimises the image alone, which is better conditioned and faster.
Both use L-BFGS with a strong-Wolfe line search; the published recipe (fixed step 1, no line search)
diverges on some images and is kept as the reference loop in ``benchmarks/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.attacks.labels import infer_labels
from gradleak.attacks.optimization import EngineConfig, optimize
from gradleak.observation import Observation


@dataclass
class DLG(Attack):
    """Deep Leakage from Gradients: joint image and soft-label optimisation."""

    name: ClassVar[str] = "dlg"
    iterations: int = 300
    restarts: int = 1
    lr: float = 1.0
    history_size: int = 100

    def engine(self) -> EngineConfig:
        return EngineConfig(
            iterations=self.iterations, restarts=self.restarts, optimizer="lbfgs", lr=self.lr,
            history_size=self.history_size, objective="l2", init="randn",
        )

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        return optimize(
            obs, self.engine(), labels=None, attack_name=self.name, settings=self.settings(),
            device=device, seed=seed, callback=callback, progress=progress,
        )


@dataclass
class IDLG(Attack):
    """Improved DLG: labels from the last layer's gradient (or leaked), then the image alone."""

    name: ClassVar[str] = "idlg"
    iterations: int = 300
    restarts: int = 1
    lr: float = 1.0
    history_size: int = 100
    labels: Literal["auto", "infer", "leaked"] = "auto"

    def engine(self) -> EngineConfig:
        return EngineConfig(
            iterations=self.iterations, restarts=self.restarts, optimizer="lbfgs", lr=self.lr,
            history_size=self.history_size, objective="l2", init="randn",
        )

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        labels = resolve_labels(obs, self.labels)
        return optimize(
            obs, self.engine(), labels=labels, attack_name=self.name, settings=self.settings(),
            device=device, seed=seed, callback=callback, progress=progress,
        )


def resolve_labels(obs: Observation, source: str, rule: str = "idlg") -> torch.Tensor:
    """Labels for an attack: the leaked ones ('leaked'), inferred ('infer'), or leaked if present ('auto')."""
    from gradleak.errors import ConfigError

    if source == "leaked" or (source == "auto" and obs.labels is not None):
        if obs.labels is None:
            raise ConfigError("labels='leaked' but the observation carries no labels")
        return obs.labels
    if source not in ("auto", "infer"):
        raise ConfigError(f"labels must be 'auto', 'infer' or 'leaked', got {source!r}")
    return infer_labels(obs, rule)


ATTACKS.register("dlg")(DLG)
ATTACKS.register("idlg")(IDLG)
