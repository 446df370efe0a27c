"""The contract every attack keeps: ``attack.reconstruct(observation) -> Reconstruction``.

An attack receives an ``Observation`` only. The ground truth is scored afterwards, outside the attack;
that separation is the threat model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from gradleak.errors import AttackError, ConfigError
from gradleak.observation import Observation
from gradleak.registry import Registry

#: Called with (iteration, candidate pixels of every restart (R, B, C, H, W)); used by benchmarks and UIs.
Callback = Callable[[int, torch.Tensor], None]


@dataclass
class Reconstruction:
    """An attack's answer: the recovered batch in the observation's input kind (``inputs``: images ``(B, C, H, W)``
    with pixels in [0, 1], token ids ``(B, L)``, or feature vectors ``(B, F)``, as ``GroundTruth.inputs``), labels
    ``(B,)`` if it recovered them, and how it got there (objective trace per iteration and restart, time)."""

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

    def __post_init__(self) -> None:
        """Refuse settings outside their ranges (``SETTING_RANGES``, ``Literal`` choices), all named at once."""
        problems = setting_problems(self)
        if problems:
            raise ConfigError(f"attack {self.name!r}: " + "; ".join(problems))

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

#: The range of every numeric attack setting, by name: ``(low, high, low_open, high_open, integer)``. Every attack
#: checks its settings against it when it is built (``Attack.__post_init__``), reporting all problems at once
#: (as Opacus's validators do), so a sweep or a command refuses a bad setting before any work. The contract test
#: (tests/attacks/test_contract.py) fails for a numeric setting of a registered attack that has no range here.
INF = math.inf
SETTING_RANGES: dict[str, tuple[float, float, bool, bool, bool]] = {
    # optimisation: budget, step sizes, regularisers
    "iterations": (1, INF, False, True, True), "restarts": (1, INF, False, True, True),
    "steps": (1, INF, False, True, True), "history_size": (1, INF, False, True, True),
    "warmup": (0, INF, False, True, True), "patience": (0, INF, False, True, True),
    "lr": (0, INF, True, True, False), "lr_free": (0, INF, True, True, False), "lr_decay": (0, 1, True, False, False),
    "objective_scale": (0, INF, True, True, False), "tv": (0, INF, False, True, False),
    "bn": (0, INF, False, True, False), "l2": (0, INF, False, True, False), "group": (0, INF, False, True, False),
    "alpha": (0, INF, False, True, False), "coeff_reg": (0, INF, False, True, False),
    "coeff_perplexity": (0, INF, False, True, False), "epoch_prior": (0, INF, False, True, False),
    "count_prior": (0, INF, False, True, False), "tied_share": (0, 1, False, True, False),
    "width": (1, INF, False, True, True),
    # GIAS's generator: its size, training and the share of the budget spent on the latent
    "latent_dim": (1, INF, False, True, True), "train_steps": (1, INF, False, True, True),
    "generator_seed": (0, INF, False, True, True), "latent_share": (0, 1, False, False, False),
    "generator_lr": (0, INF, True, True, False),
    # LAMP's discrete moves and prior
    "init_candidates": (1, INF, False, True, True), "candidates": (1, INF, False, True, True),
    "swap_every": (1, INF, False, True, True), "swap_burnin": (0, 1, False, False, False),
    "prior_steps": (0, INF, False, True, True),
    # DAGER and the subspace attack: relative distances, search bounds
    "threshold": (0, 1, True, False, False), "threshold2": (0, 1, True, False, False),
    "dropout_threshold": (0, 1, True, False, False), "time_limit_s": (0, INF, True, True, False),
    "max_candidates": (1, INF, False, True, True), "assemble_sweeps": (0, INF, False, True, True),
    "assemble_options": (0, INF, False, True, True), "repair_positions": (0, INF, False, True, True),
    "extra": (0, INF, False, True, True), "branch_ratio": (0, INF, True, True, False),
    "beam": (0, INF, False, True, True),
    "gap": (0, INF, False, True, False), "stop_ratio": (0, INF, False, True, False),
    "rtol": (0, 1, True, True, False), "rank_tol": (0, 1, True, True, False),
    # Cocktail Party (ICA) and SPEAR
    "ica_iters": (1, INF, False, True, True), "ica_tol": (0, INF, True, True, False),
    "iters": (0, INF, False, True, True), "negentropy": (0, INF, False, True, False),
    "independence": (0, INF, False, True, False), "temperature": (0, INF, True, True, False),
    "max_trials": (0, INF, False, True, True), "chunk": (1, INF, False, True, True),
    "guide_rounds": (0, INF, False, True, True), "irls_starts": (0, INF, False, True, True),
    "irls_rounds": (0, INF, False, True, True), "irls_iters": (1, INF, False, True, True),
    "pool_cap": (1, INF, False, True, True), "zero_tol": (0, 1, True, True, False),
    "min_extra_zeros": (0, INF, False, True, True), "min_zero_share": (0, 1, False, False, False),
    "invert_iterations": (0, INF, False, True, True), "invert_lr": (0, INF, True, True, False),
    "invert_tv": (0, INF, False, True, False),
    # analytic attacks
    "tolerance": (0, INF, True, True, False), "min_rows": (1, INF, False, True, True),
    "min_share": (0, 1, False, False, False), "pixel_tolerance": (0, 1, True, False, False),
}


def setting_problems(attack: Any) -> list[str]:
    """Every setting of ``attack`` (a dataclass) outside its stated range or choices, one phrase each."""
    problems = []
    hints = typing.get_type_hints(type(attack))
    for f in dataclasses.fields(attack):
        value, hint = getattr(attack, f.name), hints.get(f.name)
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            problems.append(f"{f.name} must be one of {', '.join(map(repr, typing.get_args(hint)))}, got {value!r}")
        bounds = SETTING_RANGES.get(f.name)
        if bounds is None or value is None:
            continue
        low, high, low_open, high_open, integer = bounds
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
                or not math.isfinite(value):
            problems.append(f"{f.name} must be {kind}, got {value!r}")
            continue
        if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
            lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
            problems.append(f"{f.name} must lie in {lo}{low:g}, {high:g}{hi}, got {value!r}")
    return problems
