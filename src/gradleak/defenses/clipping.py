"""Clipping the shared update to a global L2 norm (the clipping half of DP-FedAvg, McMahan et al. 2018,
without the noise): ``update * min(1, max_norm / ||update||)`` over all tensors together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from gradleak.defenses.base import DEFENSES, ClientContext, Defense, Update, check_range


def global_norm(update: Update) -> torch.Tensor:
    """L2 norm of all tensors of ``update`` taken together."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v.float()) for v in update.values()]))


@dataclass
class GradientClipping(Defense):
    """Scale the whole update down to L2 norm ``max_norm`` when it is larger."""

    name: ClassVar[str] = "clipping"
    strength: ClassVar[str] = "max_norm"
    max_norm: float = 1.0

    def validate(self) -> None:
        check_range("clipping", "max_norm", self.max_norm, 0.0, low_open=True)

    def transform(self, update: Update, context: ClientContext) -> Update:
        factor = (self.max_norm / (global_norm(update) + 1e-12)).clamp(max=1.0)
        return {k: v * factor.to(v.dtype) for k, v in update.items()}


DEFENSES.register(GradientClipping.name)(GradientClipping)
