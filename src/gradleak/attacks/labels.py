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


@LABEL_RULES.register("yin")
def yin(obs: Observation) -> torch.Tensor:
    """Column-minimum rule (Yin et al. 2021, GradInversion): the ``B`` classes whose last-layer weight-gradient
    row has the most negative entry. Exact when the batch holds ``B`` distinct classes and features are
    non-negative; it cannot express repeated labels (for ``B > K`` the ranking wraps around)."""
    w_grad, _ = classifier_gradient(obs)
    order = w_grad.min(dim=1).values.argsort()
    return order[torch.arange(obs.batch_size) % order.numel()].long()


@LABEL_RULES.register("count")
def count(obs: Observation, probes: int = 256, seed: int = 0) -> torch.Tensor:
    """How many times each class occurs, in the spirit of LLG (Wainakh et al. 2022) and iLRG (Ma et al. 2023).

    The last layer's bias gradient is ``g = mean_i (p_i - onehot(y_i))``, so ``n_c = B (mean_i p_ic - g_c)``.
    The attacker does not know the batch's mean softmax ``p``; it estimates it by running the server's model on
    ``probes`` random inputs (standard normal in the normalised space), then rounds to non-negative counts that
    sum to ``B`` (largest remainder). Without a bias, the row sums of the weight gradient stand in for ``g``,
    divided by the probes' mean feature sum (Geng et al. 2021). Accurate while the softmax varies little between
    inputs (any untrained network with the usual initialisation); a network whose softmax saturates (LeNet with
    DLG's U(-0.5, 0.5) init) sends almost no gradient for samples it already classifies as their label, and
    those counts can only be guessed from the probes.
    """
    w_grad, b_grad = classifier_gradient(obs)
    model = obs.build_model("cpu")
    weight_name, _ = last_linear(model, obs.num_classes)
    head = model.get_submodule(weight_name.rsplit(".", 1)[0]) if "." in weight_name else model
    features: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, inp: features.append(inp[0].detach()))
    gen = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            probs = torch.softmax(model(torch.randn((probes, *obs.input_shape), generator=gen)), dim=-1)
    finally:
        hook.remove()
    mean_p = probs.mean(0)
    if b_grad is not None:
        signal = b_grad.float()
    else:
        signal = w_grad.float().sum(dim=1) / features[0].flatten(1).sum(dim=1).mean().clamp_min(1e-12)
    counts = round_counts(obs.batch_size * (mean_p - signal), obs.batch_size)
    return torch.repeat_interleave(torch.arange(obs.num_classes), counts)


def round_counts(estimate: torch.Tensor, total: int) -> torch.Tensor:
    """Non-negative integers close to ``estimate`` that sum to ``total`` (largest-remainder rounding)."""
    estimate = estimate.double().clamp_min(0.0)
    if float(estimate.sum()) > 0:
        estimate = estimate * (total / float(estimate.sum()))
    counts = estimate.floor().long()
    short = total - int(counts.sum())
    if short > 0:
        counts[(estimate - counts).argsort(descending=True)[:short]] += 1
    return counts


def infer_labels(obs: Observation, rule: str = "idlg") -> torch.Tensor:
    """Labels ``(B,)`` by the named rule; order carries no meaning for batches (scored as a multiset)."""
    return LABEL_RULES.get(rule)(obs)


def default_rule(obs: Observation) -> str:
    """iDLG's exact rule for a single sample, the counting rule for a batch."""
    return "idlg" if obs.batch_size == 1 else "count"


def label_multiset_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of the batch whose labels are matched when both are treated as multisets (order-free).

    This is the label-count accuracy: ``sum_c min(n_hat_c, n_c) / B`` (iLRG's instance-level accuracy)."""
    pred_counts = torch.bincount(predicted.long().cpu(), minlength=int(max(predicted.max(), truth.max())) + 1)
    true_counts = torch.bincount(truth.long().cpu(), minlength=pred_counts.numel())
    pred_counts = torch.nn.functional.pad(pred_counts, (0, true_counts.numel() - pred_counts.numel()))
    return float(torch.minimum(pred_counts, true_counts).sum()) / truth.numel()


label_count_accuracy = label_multiset_accuracy


def label_existence_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Which classes occur in the batch, scored as ``|P & T| / |P | T|`` of the predicted and true class sets
    (1.0 only when exactly the right classes are named, however often)."""
    pred, true = set(predicted.long().tolist()), set(truth.long().tolist())
    return len(pred & true) / max(1, len(pred | true))
