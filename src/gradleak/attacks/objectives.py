"""Gradient distances, looked up by name: adding one touches no attack.

Each takes the candidate's update and the observed update flattened and concatenated in parameter order,
``(..., P)``, and per-entry weights ``(P,)`` or ``None``, and returns the distance ``(...)``. Leading dimensions
(copies of a stacked model, see ``stacking``) are kept, so one call scores every restart; a target without them
broadcasts. Layer weights (Geiping et al. 2020 weight early layers) arrive expanded to one weight per entry.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gradleak.registry import Registry

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
OBJECTIVES: Registry[torch.Tensor] = Registry("objective")


@OBJECTIVES.register("l2")
def squared_l2(candidate: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distance (Zhu et al. 2019, DLG)."""
    diff = candidate - target
    sq = diff * diff
    return (sq if weights is None else sq * weights).sum(-1)


@OBJECTIVES.register("l1")
def l1(candidate: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Absolute difference; less sensitive to a few large entries."""
    diff = (candidate - target).abs()
    return (diff if weights is None else diff * weights).sum(-1)


@OBJECTIVES.register("cosine")
def cosine(candidate: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - cos`` of the whole flattened update (Geiping et al. 2020): matches direction, not magnitude."""
    weighted = target if weights is None else target * weights
    dot = (candidate * weighted).sum(-1)
    cand_sq = (candidate * candidate if weights is None else candidate * candidate * weights).sum(-1)
    targ_sq = (target * weighted).sum(-1)
    return 1.0 - dot / (cand_sq.sqrt() * targ_sq.sqrt() + 1e-12)
