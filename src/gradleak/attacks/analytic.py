"""Closed-form recovery from a fully connected layer with bias (Phong et al. 2017; Geiping et al. 2020).

For one sample, a linear layer ``z = W x + b`` has gradients ``dL/dW = (dL/dz) x^T`` and ``dL/db = dL/dz``:
every row ``j`` with a non-zero bias gradient gives the layer's input exactly, ``x = (dL/dW_j) / (dL/db_j)``.
When that layer is the first one of the network, its input is the image.

For a batch the update is the mean over samples, ``dL/dW_j = 1/B sum_i delta_ij x_i``, so a row holds a weighted
mixture of the samples it saw. Two cases still separate samples:

- a hidden unit behind a ReLU that exactly one sample activated (Pan et al. 2022, "neuron exclusivity") gives
  that sample exactly; several such units of one sample give the *same* ratio, which is how the attack tells
  a pure sample from a mixture without the ground truth (rows agreeing to ``tolerance``);
- when the layer is the classifier, the row of a class that exactly one sample holds is dominated by that
  sample (its ``p - 1`` against the others' ``p``): Geiping et al. (2020) read the batch off these rows.
  This is exact only when the other samples put no probability on that class, so those slots are reported as
  approximate, never as recovered.

Slots that no row separates are filled with the dataset's mean colour and listed in ``details``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.attacks.base import ATTACKS, Attack, Callback, Reconstruction
from gradleak.errors import ConfigError
from gradleak.observation import Observation


# -- helpers shared by the analytic attacks ----------------------------------------------------------------
def to_pixels(obs: Observation, x: torch.Tensor) -> torch.Tensor:
    """Normalised model inputs (``(N, D)`` or ``(N, C, H, W)``) -> pixels in [0, 1], ``(N, C, H, W)``."""
    mean, std = obs.normalization(x.device)
    images = x.reshape(-1, *obs.input_shape).to(mean.dtype if x.dtype != torch.float64 else torch.float64)
    return (images * std.to(images.dtype) + mean.to(images.dtype)).clamp(0.0, 1.0).float()


def filler(obs: Observation, count: int) -> torch.Tensor:
    """``count`` blank images of the dataset's mean colour: what an analytic attack puts in slots it cannot fill."""
    mean, _ = obs.normalization()
    return mean.expand(obs.input_shape).expand(count, *obs.input_shape).clone()


def assemble(obs: Observation, recovered: list[torch.Tensor]) -> tuple[torch.Tensor, list[bool]]:
    """Put up to ``batch_size`` recovered images (pixels) first and filler after; returns images and a mask."""
    found = recovered[: obs.batch_size]
    images = torch.cat([*(r.reshape(1, *obs.input_shape).cpu().float() for r in found),
                        filler(obs, obs.batch_size - len(found))])
    return images, [i < len(found) for i in range(obs.batch_size)]


def input_linear_layer(model: nn.Module, num_pixels: int, layer: str | None = None) -> tuple[str, nn.Linear]:
    """The ``nn.Linear`` (with bias) that reads the flattened image: ``layer`` by module name, or the first one
    whose ``in_features`` is the number of input pixels."""
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if (layer is not None and name == layer) or (layer is None and module.in_features == num_pixels):
            if module.bias is None:
                raise ConfigError(f"linear layer {name!r} has no bias: the ratio attack needs its bias gradient")
            if module.in_features != num_pixels:
                raise ConfigError(
                    f"linear layer {name!r} reads {module.in_features} features, not the {num_pixels} input pixels"
                )
            return name, module
    want = f"named {layer!r}" if layer is not None else f"with {num_pixels} inputs (the flattened image)"
    raise ConfigError(f"the model has no nn.Linear {want}: the linear-layer attack needs a fully connected input layer")


def row_ratios(
    weight_grad: torch.Tensor, bias_grad: torch.Tensor, rel_eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dW_j) / (dL/db_j)`` for every row whose bias gradient is not negligible; returns (ratios, row ids)."""
    b = bias_grad.double()
    rows = torch.nonzero(b.abs() > rel_eps * b.abs().max().clamp_min(1e-300)).flatten()
    return weight_grad.double()[rows] / b[rows, None], rows


def agreeing_groups(candidates: torch.Tensor, tolerance: float) -> list[list[int]]:
    """Group rows whose candidates agree within ``tolerance`` (relative L2); largest groups first."""
    norms = candidates.norm(dim=1).clamp_min(1e-300)
    dist = torch.cdist(candidates, candidates) / torch.maximum(norms[:, None], norms[None, :])
    close = dist < tolerance
    unassigned = torch.ones(len(candidates), dtype=torch.bool, device=candidates.device)
    groups: list[list[int]] = []
    for i in range(len(candidates)):
        if unassigned[i]:
            members = torch.nonzero(close[i] & unassigned).flatten().tolist()
            unassigned[members] = False
            groups.append(members)
    return sorted(groups, key=len, reverse=True)


@dataclass
class LinearLayerAttack(Attack):
    """Inputs of a fully connected input layer from the ratio of its weight and bias gradients.

    ``layer``: module name of the linear layer (default: the first one reading the flattened image).
    ``tolerance``: relative distance under which two rows count as the same sample. ``min_rows``: rows that must
    agree before a batch sample counts as recovered (1 accepts every row, mixtures included).
    """

    name: ClassVar[str] = "linear"
    layer: str | None = None
    tolerance: float = 1e-5
    min_rows: int = 2

    def reconstruct(
        self,
        obs: Observation,
        *,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        callback: Callback | None = None,
        progress: bool = False,
    ) -> Reconstruction:
        del seed, progress  # closed form: nothing random, nothing to iterate
        start = time.perf_counter()
        model = obs.build_model()
        name, module = input_linear_layer(model, obs.example_size, self.layer)
        prefix = f"{name}." if name else ""
        grads = obs.gradient_estimate()
        for key in (prefix + "weight", prefix + "bias"):
            if key not in grads:
                raise ConfigError(f"the update withholds {key!r}: the linear-layer attack needs it")
        w_grad = grads[prefix + "weight"].to(device)
        b_grad = grads[prefix + "bias"].to(device)
        details: dict[str, Any] = {"layer": name}
        labels = None
        if obs.batch_size == 1:
            # Least squares over all rows: x = sum_j b_j W_j / sum_j b_j^2 (every row gives x exactly).
            b = b_grad.double()
            if not b.abs().max() > 0:
                raise ConfigError(f"the bias gradient of {name!r} is zero: no row reveals the input")
            x = (b @ w_grad.double()) / (b @ b)
            images, recovered = assemble(obs, [to_pixels(obs, x[None])])
            details.update(rows_used=int((b != 0).sum()), method=["ratio"])
        else:
            images, recovered, labels, info = self._batch(obs, module, w_grad, b_grad)
            details.update(info)
        details["recovered"] = recovered
        details["not_separated"] = obs.batch_size - sum(recovered)
        if callback is not None:
            callback(0, images[None])
        return Reconstruction(
            inputs=images, labels=labels, attack=self.name, settings=self.settings(), iterations=1,
            wall_time_s=time.perf_counter() - start, details=details,
        )

    def _batch(
        self, obs: Observation, module: nn.Linear, w_grad: torch.Tensor, b_grad: torch.Tensor
    ) -> tuple[torch.Tensor, list[bool], torch.Tensor | None, dict[str, Any]]:
        candidates, rows = row_ratios(w_grad, b_grad)
        # Behind a ReLU, a pure sample must switch on the units it came from: W_j x + b_j > 0 (mixtures often
        # fail this). The classifier has no activation after it, so the check does not apply there.
        weight, bias = module.weight.detach().to(candidates), module.bias.detach().to(candidates)
        active = (candidates * weight[rows]).sum(1) + bias[rows] > 0
        if module.out_features == obs.num_classes:
            active[:] = True
        groups = [
            g for g in agreeing_groups(candidates, self.tolerance)
            if len(g) >= self.min_rows and bool(active[g].all())
        ]
        exact = [to_pixels(obs, candidates[g].mean(0, keepdim=True))[0] for g in groups[: obs.batch_size]]
        method = ["exclusive rows"] * len(exact)
        info: dict[str, Any] = {"agreeing_rows": [len(g) for g in groups[: obs.batch_size]]}
        labels = None
        approximate: list[torch.Tensor] = []
        if module.out_features == obs.num_classes and len(exact) < obs.batch_size:
            # The layer is the classifier: one row per class. A class that exactly one sample holds has a
            # negative bias gradient dominated by that sample (Geiping et al. 2020).
            singles, shared = _single_classes(obs, b_grad)
            row_of = {int(r): i for i, r in enumerate(rows)}
            for k in singles[: obs.batch_size - len(exact)]:
                if k in row_of:
                    approximate.append(to_pixels(obs, candidates[row_of[k]][None])[0])
            info.update(label_rows=singles, classes_not_separated=shared)
            method += ["label row (approximate)"] * len(approximate)
            if not exact and len(approximate) == obs.batch_size:
                labels = torch.tensor(singles[: obs.batch_size])
        images, _ = assemble(obs, exact + approximate)
        recovered = [i < len(exact) for i in range(obs.batch_size)]
        method += ["filler"] * (obs.batch_size - len(method))
        info["method"] = method
        return images, recovered, labels, info


def _single_classes(obs: Observation, bias_grad: torch.Tensor) -> tuple[list[int], list[int]]:
    """Classes held by exactly one sample, and classes held by several (leaked labels when known; otherwise the
    classes with a negative bias gradient, ordered by it, with ``B - #classes`` shared samples unattributed)."""
    if obs.labels is not None:
        counts = torch.bincount(obs.labels.long(), minlength=obs.num_classes)
        return torch.nonzero(counts == 1).flatten().tolist(), torch.nonzero(counts > 1).flatten().tolist()
    negative = torch.nonzero(bias_grad < 0).flatten()
    order = negative[bias_grad[negative].argsort(descending=True)]  # least negative first: likeliest single
    return order.tolist(), []


ATTACKS.register("linear")(LinearLayerAttack)
