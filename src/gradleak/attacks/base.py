"""The contract every attack keeps: ``attack.reconstruct(observation) -> Reconstruction``.

An attack receives an ``Observation`` only. The ground truth is scored afterwards, outside the attack;
that separation is the threat model.
"""

from __future__ import annotations

import dataclasses
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from gradleak.errors import AttackError, ConfigError
from gradleak.observation import Observation
from gradleak.registry import Registry

#: Called with (iteration, candidate pixels of every restart (R, B, C, H, W)); used by benchmarks and UIs.
Callback = Callable[[int, torch.Tensor], None]


@dataclass
class Reconstruction:
    """An attack's answer: pixels in [0, 1] ``(B, C, H, W)``, labels ``(B,)`` if it recovered them, and how it
    got there (objective trace per iteration and restart, time)."""

    inputs: torch.Tensor
    labels: torch.Tensor | None
    attack: str
    settings: dict[str, Any]
    trace: torch.Tensor = field(default_factory=lambda: torch.empty(0, 1))
    restart_objectives: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    best_restart: int = 0
    iterations: int = 0
    wall_time_s: float = 0.0
    #: Attack-specific findings written to the report, e.g. which slots of an analytic attack hold a recovered
    #: sample (``"recovered"``, the rest are filler) or the rank condition of each solved layer.
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # the one place every attack's answer is made: a NaN or Inf candidate (a diverged run, a crafted checkpoint)
        # is never scored, reported or saved as a reconstruction
        x = self.inputs
        if isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex()) and not torch.isfinite(x).all():
            raise AttackError(f"attack {self.attack!r} ended with a reconstruction holding NaN or Inf (its "
                              f"optimisation diverged, or resumed from a bad state); nothing to report")


class Attack(ABC):
    """Base of all attacks. Subclasses are dataclasses of their hyperparameters with paper defaults.

    Each attack declares the input kinds (``image``, ``tokens``, ``features``) and training tasks
    (``classification``, ``causal_lm``, ``masked_lm``) it handles; ``reconstruct`` refuses other observations
    with a clear error before any work (every subclass's ``reconstruct`` is wrapped to check)."""

    name: ClassVar[str]
    input_kinds: ClassVar[frozenset[str]] = frozenset({"image"})
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        method = cls.__dict__.get("reconstruct")
        if method is None or getattr(method, "_checks_support", False):
            return

        @functools.wraps(method)
        def reconstruct(self: Attack, obs: Observation, *args: Any, **kw: Any) -> Reconstruction:
            self.check_supports(obs)
            return method(self, obs, *args, **kw)

        reconstruct._checks_support = True  # type: ignore[attr-defined]
        cls.reconstruct = reconstruct  # type: ignore[method-assign]

    def check_supports(self, obs: Observation) -> None:
        """Raise ``ConfigError`` when this attack does not handle the observation's input kind or task."""
        attack = getattr(self, "name", type(self).__name__)
        if obs.inputs.kind not in self.input_kinds:
            raise ConfigError(f"attack {attack!r} handles {', '.join(sorted(self.input_kinds))} inputs, not "
                              f"{obs.inputs.kind} (see `gradleak list`)")
        if obs.task.kind not in self.tasks:
            raise ConfigError(f"attack {attack!r} handles {', '.join(sorted(self.tasks))} tasks, not "
                              f"{obs.task.kind} (see `gradleak list`)")

    @abstractmethod
    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction: ...

    def settings(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self):
            return dataclasses.asdict(self)
        return {}


ATTACKS: Registry[Attack] = Registry("attack")
