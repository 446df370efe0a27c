"""The base class of the attacks that run the engine, and how they get their labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from gradleak.attacks.base import Attack, Callback, Reconstruction
from gradleak.attacks.labels import default_rule, infer_labels
from gradleak.attacks.optimization.config import EngineConfig
from gradleak.attacks.optimization.loop import optimize, optimize_many
from gradleak.errors import ConfigError
from gradleak.observation import Observation


@dataclass
class OptimizationAttack(Attack):
    """Base of the attacks that run this engine: subclasses are dataclasses of their paper's defaults and say
    how they configure the engine (``engine``).

    ``labels``: ``"leaked"`` uses the labels in the observation, ``"infer"`` reads them off the update with
    ``label_rule`` (a ``LABEL_RULES`` name, or ``"auto"``: iDLG for one sample, label counting for a batch),
    ``"auto"`` takes leaked labels when present, else infers; ``"soft"`` optimises them jointly (DLG).
    ``checkpoint``: a file to save the attack's state to and resume from.
    """

    name: ClassVar[str] = "optimization"
    iterations: int = 300
    restarts: int = 1
    lr: float = 0.1
    labels: Literal["auto", "infer", "leaked", "soft"] = "auto"
    label_rule: str = "auto"
    checkpoint: str | None = None

    def engine(self, obs: Observation | None = None) -> EngineConfig:
        """The engine settings of this attack (``obs`` lets a recipe adapt, e.g. drop a BN prior)."""
        raise NotImplementedError

    def resolve_labels(self, obs: Observation) -> torch.Tensor | None:
        if self.labels == "soft":
            return None
        return resolve_labels(obs, self.labels, self.label_rule)

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
            obs, self.engine(obs), labels=self.resolve_labels(obs), attack_name=self.name, settings=self.settings(),
            device=device, seed=seed, callback=callback, progress=progress, checkpoint=self.checkpoint,
        )

    def reconstruct_many(
        self,
        observations: Sequence[Observation],
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        progress: bool = False,
    ) -> list[Reconstruction]:
        """Attack the clients of one round (same model and weights) as one batched computation."""
        labels = None if self.labels == "soft" else [self.resolve_labels(o) for o in observations]
        return optimize_many(
            observations, self.engine(observations[0]), labels=labels,  # type: ignore[arg-type]
            attack_name=self.name, settings=self.settings(), device=device, seed=seed, progress=progress,
            checkpoint=self.checkpoint,
        )


def resolve_labels(obs: Observation, source: str, rule: str = "auto") -> torch.Tensor:
    """Labels for an attack: the leaked ones ('leaked'), inferred ('infer'), or leaked if present ('auto').
    ``rule`` names a ``LABEL_RULES`` entry; ``'auto'`` picks iDLG for one sample and label counting for more."""
    if source == "leaked" or (source == "auto" and obs.labels is not None):
        if obs.labels is None:
            raise ConfigError("labels='leaked' but the observation carries no labels")
        return obs.labels
    if source not in ("auto", "infer"):
        raise ConfigError(f"labels must be 'auto', 'infer', 'leaked' or 'soft', got {source!r}")
    return infer_labels(obs, default_rule(obs) if rule == "auto" else rule)
