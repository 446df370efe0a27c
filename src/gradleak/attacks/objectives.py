"""Gradient distances, looked up by name: adding one touches no attack.

Each takes the candidate's update and the observed update (dicts keyed by parameter name, same keys) and
returns a scalar. ``weights`` optionally scales each layer's term (Geiping et al. 2020 weight early layers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from gradleak.registry import Registry

Tensors = Mapping[str, torch.Tensor]
Objective = Callable[[Tensors, Tensors, Mapping[str, float] | None], torch.Tensor]
OBJECTIVES: Registry[torch.Tensor] = Registry("objective")


def _w(weights: Mapping[str, float] | None, key: str) -> float:
    return 1.0 if weights is None else float(weights.get(key, 1.0))


@OBJECTIVES.register("l2")
def squared_l2(candidate: Tensors, target: Tensors, weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """Sum over layers of the squared Euclidean distance (Zhu et al. 2019, DLG)."""
    if weights is None:
        # One flat difference: a handful of tensor operations instead of four per layer (this runs once per
        # evaluation, next to a double-backward of a couple of milliseconds on small models).
        diff = torch.cat([candidate[k].reshape(-1) for k in target]) - torch.cat([t.reshape(-1) for t in target.values()])
        return diff.dot(diff)
    return sum(_w(weights, k) * (candidate[k] - t).pow(2).sum() for k, t in target.items())  # type: ignore[return-value]


@OBJECTIVES.register("l1")
def l1(candidate: Tensors, target: Tensors, weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """Sum over layers of the absolute difference; less sensitive to a few large entries."""
    return sum(_w(weights, k) * (candidate[k] - t).abs().sum() for k, t in target.items())  # type: ignore[return-value]


@OBJECTIVES.register("cosine")
def cosine(candidate: Tensors, target: Tensors, weights: Mapping[str, float] | None = None) -> torch.Tensor:
    """``1 - cos`` of the whole flattened update (Geiping et al. 2020): matches direction, not magnitude."""
    dot = sum(_w(weights, k) * (candidate[k] * t).sum() for k, t in target.items())
    cand_sq = sum(_w(weights, k) * candidate[k].pow(2).sum() for k in target)
    targ_sq = sum(_w(weights, k) * t.pow(2).sum() for k, t in target.items())
    return 1.0 - dot / (cand_sq.sqrt() * targ_sq.sqrt() + 1e-12)  # type: ignore[union-attr,operator]
