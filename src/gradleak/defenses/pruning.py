"""Gradient compression by magnitude pruning (top-k sparsification; Lin et al. 2018, Deep Gradient Compression),
the pruning defense of Zhu et al. (2019, DLG): the ``ratio`` fraction of entries with the smallest magnitude is
set to zero, per tensor (``scope='layer'``, as DLG does) or over the whole update (``scope='global'``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from gradleak.defenses.base import DEFENSES, ClientContext, Defense, Update, check_range
from gradleak.errors import ConfigError


def keep_largest(values: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of the ``keep`` largest-magnitude entries of a flat tensor (ties broken by topk)."""
    mask = torch.zeros_like(values, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(values.abs(), keep, sorted=False).indices] = True
    return mask


@dataclass
class Pruning(Defense):
    """Zero the smallest ``ratio`` of the update's entries by magnitude; ``ratio`` in [0, 1)."""

    name: ClassVar[str] = "pruning"
    strength: ClassVar[str] = "ratio"
    ratio: float = 0.5
    scope: Literal["layer", "global"] = "layer"

    def validate(self) -> None:
        check_range("pruning", "ratio", self.ratio, 0.0, 1.0)
        if self.scope not in ("layer", "global"):
            raise ConfigError(f"pruning: scope must be 'layer' or 'global', got {self.scope!r}")

    def transform(self, update: Update, context: ClientContext) -> Update:
        if self.ratio == 0:
            return update
        if self.scope == "layer":
            out: Update = {}
            for k, v in update.items():
                flat = v.flatten()
                keep = flat.numel() - int(self.ratio * flat.numel())
                out[k] = (flat * keep_largest(flat, keep)).view_as(v)
            return out
        names = list(update)
        flat = torch.cat([update[k].flatten() for k in names])
        mask = keep_largest(flat, flat.numel() - int(self.ratio * flat.numel()))
        out, start = {}, 0
        for k in names:
            n = update[k].numel()
            out[k] = (update[k].flatten() * mask[start : start + n]).view_as(update[k])
            start += n
        return out


DEFENSES.register(Pruning.name)(Pruning)
