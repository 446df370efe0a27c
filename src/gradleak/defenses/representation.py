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

from gradleak.defenses.base import DEFENSES, ClientContext, Defense, Update, check_range, classifier_layer


def representation_sensitivity(model: nn.Module, inputs: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Per-element ``sum_b ||d r_bi / d x_b|| / |r_bi|`` of the classifier head's input ``r``, shape ``(F,)``."""
    head, _, _ = classifier_layer(model)
    captured: dict[str, torch.Tensor] = {}
    hook = head.register_forward_pre_hook(lambda _m, args: captured.__setitem__("r", args[0]))
    x = inputs.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            model(x)
    finally:
        hook.remove()
    r = captured["r"].flatten(1)  # (B, F)
    b, f = r.shape
    norms = torch.empty(b, f, device=r.device)
    for start in range(0, f, chunk):
        stop = min(f, start + chunk)
        basis = torch.zeros(stop - start, b, f, device=r.device, dtype=r.dtype)
        basis[torch.arange(stop - start), :, torch.arange(start, stop)] = 1.0
        (jac,) = torch.autograd.grad(r, x, grad_outputs=basis, retain_graph=True, is_grads_batched=True)
        norms[:, start:stop] = jac.flatten(2).norm(dim=2).T
    return (norms / r.detach().abs().clamp_min(1e-12)).sum(0)


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
