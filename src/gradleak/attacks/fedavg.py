"""The FedAvg attack (Geiping et al. 2020, Sec. 6): the server sees only the weight delta after ``k`` local SGD
steps with known step size and local batch size, and the attacker differentiates through the replayed steps.

Same recipe as Inverting Gradients (cosine + TV, signed Adam, box), but the simulated update is the unrolled
local training of ``optimization.UnrolledMatcher`` compared with the delta itself, instead of the delta read
as one gradient (``-delta / (lr * steps)``), which is exact only for one step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from gradleak.attacks.base import ATTACKS
from gradleak.attacks.inverting import InvertingGradients


@dataclass
class FedAvgAttack(InvertingGradients):
    """Inverting Gradients through the client's unrolled local steps (needs a 'weight_delta' observation)."""

    name: ClassVar[str] = "fedavg"

    def simulation(self) -> Literal["gradient", "unrolled"]:
        return "unrolled"


ATTACKS.register("fedavg")(FedAvgAttack)
