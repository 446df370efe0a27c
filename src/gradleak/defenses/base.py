"""The contract every defense keeps, and the one function through which a defended client computes its update.

A defense acts at one (or both) of two places of a client's round:

- ``step_gradient(model, inputs, labels, ...)``: the gradient of one local training step. Plain clients use
  the mean cross-entropy gradient; DP-SGD (Abadi et al. 2016, through Opacus) and TF-Privacy-style microbatch
  clipping replace it.
- ``transform(update, context)``: the update the client shares, after its local step(s): noise, clipping,
  pruning, quantization, label hiding, representation perturbation (Soteria), secure aggregation.

``defended_update`` composes them. It is the single code path of both the victim simulation
(``victim.simulate(..., defense=...)``) and training with a defense (``training.train(..., defense=...)``),
so the leakage and the accuracy of a defense are measured on the same computation.
Each defense validates its parameters on construction and raises ``ConfigError`` naming the bad one.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from gradleak.errors import ConfigError
from gradleak.registry import Registry
from gradleak.training_task import Update, batch_gradient

#: Draws ``n`` other clients' examples (normalised inputs, labels) with the given generator: secure aggregation.
DrawOthers = Callable[[int, torch.Generator], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class Schedule:
    """The batches a DP training run drew, as its accountant needs them.

    ``poisson=True``: ``steps`` steps, each example in each step's batch with probability
    ``q = batch_size / dataset_size`` (Opacus's ``DPDataLoader``); the accountant amplifies by that sampling.
    ``poisson=False``: batches chosen some other way (fixed slices, draws of a fixed size): nothing is
    amplified; each step is one Gaussian mechanism on the examples it holds, so an example's guarantee is that
    of the ``uses`` steps it took part in (the largest count over the examples), at sample rate 1."""

    dataset_size: int
    batch_size: int
    steps: int
    poisson: bool = True
    #: fixed batches only: the most steps any one example took part in
    uses: int | None = None

    def __post_init__(self) -> None:
        if self.dataset_size < 1 or self.batch_size < 1 or self.steps < 1:
            raise ConfigError(f"a DP schedule needs dataset_size, batch_size and steps >= 1, got {self}")
        if self.batch_size > self.dataset_size:
            raise ConfigError(f"batch_size {self.batch_size} exceeds dataset_size {self.dataset_size}")
        if self.poisson and self.uses is not None:
            raise ConfigError("a Poisson schedule is accounted by its sample rate, not by uses")
        if not self.poisson and (self.uses is None or not 1 <= self.uses <= self.steps):
            raise ConfigError(f"a schedule of fixed batches needs 1 <= uses <= steps ({self.steps}), got {self.uses}")

    @property
    def sample_rate(self) -> float:
        """The accountant's q: the Poisson rate, or 1 where the batches were not Poisson-sampled."""
        return self.batch_size / self.dataset_size if self.poisson else 1.0

    @property
    def accounted_steps(self) -> int:
        """The accountant's number of compositions: every step (Poisson), or the uses of the most-used example."""
        return self.steps if self.poisson else int(self.uses)  # type: ignore[arg-type]

    @classmethod
    def from_epochs(cls, dataset_size: int, batch_size: int, epochs: float) -> Schedule:
        """Opacus's convention (``get_noise_multiplier``): ``steps = int(epochs / sample_rate)``, Poisson."""
        if not epochs > 0:
            raise ConfigError(f"epochs must be positive, got {epochs}")
        return cls(dataset_size, batch_size, max(1, int(epochs / (batch_size / dataset_size))))

    @classmethod
    def of_fixed_batches(cls, dataset_size: int, batches: list[torch.Tensor]) -> Schedule:
        """The schedule of batches that were not Poisson-sampled: ``batches`` hold positions in ``range(dataset_size)``
        (repeats allowed); ``uses`` counts, per example, the steps whose batch held it."""
        counts = torch.zeros(dataset_size, dtype=torch.long)
        for b in batches:
            counts[torch.unique(b.cpu())] += 1
        size = max((len(b) for b in batches), default=1)
        return cls(dataset_size, min(max(size, 1), dataset_size), len(batches), poisson=False,
                   uses=max(1, int(counts.max())))

    def describe(self) -> str:
        if self.poisson:
            return f"Poisson sampling at rate {self.sample_rate:.4g}, {self.steps} steps"
        return (f"fixed batches (no amplification by sampling): an example in at most {self.uses} of "
                f"{self.steps} steps")


def draw_batches(pool_size: int, batch_size: int, steps: int, *, poisson: bool,
                 generator: torch.Generator) -> tuple[list[torch.Tensor], Schedule]:
    """The positions in ``range(pool_size)`` of each step's batch, and the ``Schedule`` they make: Poisson
    batches of expected size ``batch_size`` (each position with probability ``batch_size / pool_size``; a batch
    may be empty), or ``batch_size`` positions drawn uniformly with replacement (accounted as fixed batches).
    The one place a trainer draws batches, so the epsilon it reports is for the sampling that ran."""
    size = min(batch_size, pool_size)
    if poisson:
        rate = size / pool_size
        batches = [torch.nonzero(torch.rand(pool_size, generator=generator) < rate).flatten() for _ in range(steps)]
        return batches, Schedule(pool_size, size, steps)
    batches = [torch.randint(pool_size, (size,), generator=generator) for _ in range(steps)]
    return batches, Schedule.of_fixed_batches(pool_size, batches)


@dataclass(frozen=True)
class Privacy:
    """A formal guarantee: (epsilon, delta)-DP from ``accountant`` for ``schedule``."""

    epsilon: float
    delta: float
    accountant: str
    schedule: Schedule
    noise_multiplier: float

    def describe(self) -> str:
        return (f"epsilon {self.epsilon:.3g} at delta {self.delta:g} ({self.accountant}, noise multiplier "
                f"{self.noise_multiplier:g}; {self.schedule.describe()})")


@dataclass
class ClientContext:
    """What a defense may use when it transforms the shared update: the server's model (do not modify it),
    the client's normalised private batch, its seeded randomness, the protocol's update for another batch
    (``update_of``: gradient or local-training delta, step defense included) and, for secure aggregation,
    a way to draw other clients' data."""

    model: nn.Module
    inputs: torch.Tensor
    labels: torch.Tensor
    generator: torch.Generator
    update_of: Callable[[torch.Tensor, torch.Tensor], Update]
    draw_others: DrawOthers | None = None


class Defense(ABC):
    """Base of all defenses. Subclasses are dataclasses of their parameters; ``validate`` runs on construction.

    ``strength`` names the parameter a trade-off sweep varies. ``sampling`` is how training with the defense
    draws batches: ``"uniform"`` (fixed size) or ``"poisson"`` (each example with probability q, as the
    DP-SGD accountant assumes)."""

    name: ClassVar[str]
    strength: ClassVar[str]
    sampling: ClassVar[Literal["uniform", "poisson"]] = "uniform"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the parameter that is out of range."""

    def check_model(self, model: nn.Module) -> None:
        """Raise ``ConfigError`` if the defense cannot run on ``model`` (e.g. BatchNorm under DP-SGD)."""

    def step_gradient(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        expected_batch_size: int | None = None,
    ) -> Update:
        """The gradient of one local step on normalised ``inputs``; plain mean cross-entropy by default."""
        return batch_gradient(model, inputs, labels)

    def transform(self, update: Update, context: ClientContext) -> Update:
        """The update the client shares; unchanged by default."""
        return update

    def privacy(self, schedule: Schedule | None = None) -> Privacy | None:
        """(epsilon, delta) for ``schedule`` where the defense has a formal guarantee; ``None`` otherwise."""
        return None

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.settings().items() if v is not None)
        return f"{self.name}({args})"


DEFENSES: Registry[Defense] = Registry("defense")


def defended_update(
    defense: Defense | None,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    generator: torch.Generator,
    update_of: Callable[[torch.Tensor, torch.Tensor], Update] | None = None,
    draw_others: DrawOthers | None = None,
    expected_batch_size: int | None = None,
) -> Update:
    """The update a (defended) client shares for its normalised batch: the one code path of victim and trainer.

    ``update_of`` computes the protocol's raw update for a batch (FedAvg passes its local-training delta);
    by default it is one ``defense.step_gradient``. ``defense=None`` is the undefended mean gradient."""
    if defense is None:
        return update_of(inputs, labels) if update_of is not None else batch_gradient(model, inputs, labels)
    defense.check_model(model)
    if update_of is None:

        def update_of(x: torch.Tensor, y: torch.Tensor) -> Update:
            return defense.step_gradient(model, x, y, generator=generator, expected_batch_size=expected_batch_size)

    update = update_of(inputs, labels)
    context = ClientContext(model, inputs, labels, generator, update_of, draw_others)
    return defense.transform(update, context)


# -- helpers shared by several families ---------------------------------------------------------------
def classifier_layer(model: nn.Module) -> tuple[nn.Linear, str, str | None]:
    """The last ``nn.Linear`` of ``model`` (the classifier head) and its weight and bias parameter names."""
    found: tuple[nn.Linear, str, str | None] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            prefix = f"{name}." if name else ""
            found = (module, prefix + "weight", prefix + "bias" if module.bias is not None else None)
    if found is None:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear layer: this defense acts on the classifier head")
    return found


def check_range(owner: str, param: str, value: float, low: float, high: float = math.inf, *,
                low_open: bool = False, high_open: bool = True) -> None:
    """Raise ``ConfigError`` unless ``value`` lies in the stated interval."""
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok or math.isnan(value):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ConfigError(f"{owner}: {param} must lie in {lo}{low}, {high}{hi}, got {value}")


def randn_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``t``, drawn from ``generator`` (on its device), moved to ``t``'s."""
    return torch.randn(t.shape, generator=generator, device=generator.device, dtype=t.dtype).to(t.device)


def rand_like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform [0, 1) noise shaped like ``t``, drawn from ``generator``, moved to ``t``'s device."""
    return torch.rand(t.shape, generator=generator, device=generator.device, dtype=t.dtype).to(t.device)
