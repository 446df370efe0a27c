"""Representation perturbation: Soteria (Sun et al. 2021, "Provable defense against privacy leakage in
federated learning from representation perspective").

The input ``r`` of the classifier head (the representation) is what the head's weight update ``(dL/dz) r^T``
exposes. Soteria ranks each representation element ``r_i`` by ``||dr_i / dX|| / |r_i|`` (summed over the
batch), and prunes the ``ratio`` fraction with the smallest values, i.e. the elements whose perturbation
moves a reconstruction the most per unit of change: the matching columns of the head's weight update are set
to zero. Only the head's update changes; the mask comes from the private batch and is not shared.
(PRECODE, Scheliga et al. 2022, which changes the model with a variational bottleneck, is not implemented.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.func import jacfwd, vmap

from gradleak.defenses.base import DEFENSES, ClientContext, Defense, Update, check_range, classifier_layer


def representation_sensitivity(model: nn.Module, inputs: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """Per-element ``sum_b ||d r_bi / d x_b|| / |r_bi|`` of the classifier head's input ``r``, shape ``(F,)``.

    The per-example Jacobians come from forward-mode ``torch.func.jacfwd`` (one tangent per input pixel),
    ``chunk`` examples at a time; examples must not interact (no train-mode BatchNorm)."""
    head, _, _ = classifier_layer(model)

    def representation(x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            model(x.unsqueeze(0))
        finally:
            hook.remove()
        return captured[0].flatten()

    x = inputs.detach()
    with torch.no_grad():
        r = torch.stack([representation(xi) for xi in x])  # (B, F)
    norms = torch.cat([
        vmap(jacfwd(representation))(x[start : start + chunk]).flatten(2).norm(dim=2)
        for start in range(0, x.shape[0], chunk)
    ])
    return (norms / r.abs().clamp_min(1e-12)).sum(0)


@dataclass
class Soteria(Defense):
    """Prune the ``ratio`` fraction of the representation (columns of the head's weight update) that leaks most."""

    name: ClassVar[str] = "soteria"
    strength: ClassVar[str] = "ratio"
    ratio: float = 0.6

    def validate(self) -> None:
        check_range("soteria", "ratio", self.ratio, 0.0, 1.0)

    def transform(self, update: Update, context: ClientContext) -> Update:
        _, weight, _ = classifier_layer(context.model)
        if self.ratio == 0 or weight not in update:
            return update
        score = representation_sensitivity(context.model, context.inputs)
        pruned = int(self.ratio * score.numel())
        mask = torch.ones_like(score)
        mask[torch.argsort(score)[:pruned]] = 0.0
        out = dict(update)
        out[weight] = update[weight] * mask.to(update[weight].device, update[weight].dtype)
        return out


DEFENSES.register(Soteria.name)(Soteria)
