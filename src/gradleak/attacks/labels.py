"""Label inference from the last layer's update: its own family, used by attacks and scored alone.

For cross-entropy with softmax, the gradient of the logits of one sample is ``p - onehot(y)``: negative only
at the true class. The last linear layer's bias gradient is that vector (averaged over the batch) and each
row of its weight gradient is it times the (non-negative, after ReLU/sigmoid) penultimate features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gradleak.errors import ConfigError
from gradleak.observation import Observation
from gradleak.registry import Registry

LabelRule = Callable[[Observation], torch.Tensor]
LABEL_RULES: Registry[torch.Tensor] = Registry("label rule")


def last_linear(model: nn.Module, num_classes: int) -> tuple[str, str | None]:
    """Names of the weight and bias of the last ``nn.Linear`` with ``num_classes`` outputs."""
    found: tuple[str, str | None] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            prefix = f"{name}." if name else ""
            found = (prefix + "weight", prefix + "bias" if module.bias is not None else None)
    if found is None:
        raise ConfigError(f"no linear layer with {num_classes} outputs: label inference needs the classifier layer")
    return found


def classifier_gradient(obs: Observation) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The last layer's weight and bias gradient (as a mean gradient), or an error saying it was withheld."""
    weight, bias = last_linear(obs.model_spec.build(), obs.num_classes)
    grads = obs.gradient_estimate()
    if weight not in grads:
        raise ConfigError(f"the update withholds {weight!r}: label inference needs the last layer's update")
    return grads[weight], (grads[bias] if bias is not None and bias in grads else None)


@LABEL_RULES.register("idlg")
def idlg(obs: Observation) -> torch.Tensor:
    """iDLG (Zhao et al. 2020), batch size 1: the class whose last-layer gradient is negative.

    With a bias, the bias gradient ``p - onehot(y)`` has its only negative entry at ``y``. Without one, the
    weight-gradient row of ``y`` is ``(p_y - 1) h`` with ``h >= 0``, so its sum is the smallest.
    """
    if obs.batch_size != 1:
        raise ConfigError(f"the iDLG label rule is exact for batch size 1 only, got {obs.batch_size}")
    w_grad, b_grad = classifier_gradient(obs)
    scores = b_grad if b_grad is not None else w_grad.sum(dim=1)
    return scores.argmin().view(1).long()


def infer_labels(obs: Observation, rule: str = "idlg") -> torch.Tensor:
    """Labels ``(B,)`` by the named rule; order carries no meaning for batches (scored as a multiset)."""
    return LABEL_RULES.get(rule)(obs)


def label_multiset_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of the batch whose labels are matched when both are treated as multisets (order-free)."""
    pred_counts = torch.bincount(predicted.long().cpu(), minlength=int(max(predicted.max(), truth.max())) + 1)
    true_counts = torch.bincount(truth.long().cpu(), minlength=pred_counts.numel())
    pred_counts = torch.nn.functional.pad(pred_counts, (0, true_counts.numel() - pred_counts.numel()))
    return float(torch.minimum(pred_counts, true_counts).sum()) / truth.numel()
