"""What the attacker sees, and nothing else: the threat model as a type.

An ``Observation`` holds the model as the server sent it (architecture by registry name plus weights), the
update the client shared (gradients keyed by parameter name, or the weight delta of local training), and the
metadata a curious server can know. The private batch lives in ``GroundTruth``, which no attack receives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from gradleak.errors import CaptureError

UpdateKind = Literal["gradient", "weight_delta"]


@dataclass(frozen=True)
class ModelSpec:
    """A model by registry name and constructor settings, enough to rebuild it in another process."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        from gradleak.models import build_model

        return build_model(self.name, **self.kwargs)


@dataclass(frozen=True)
class LocalTraining:
    """The client's local schedule for a FedAvg update: ``steps`` SGD steps of ``lr`` on mini-batches of
    ``batch_size`` taken in order (wrapping around) from the client's data."""

    steps: int
    lr: float
    batch_size: int

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or not self.lr > 0:
            raise CaptureError(f"local training needs steps >= 1, batch_size >= 1 and lr > 0, got {self}")


@dataclass(frozen=True)
class Observation:
    """Everything the attacker sees.

    ``update`` maps parameter names (as in ``model.named_parameters()``) to tensors. For ``update_kind ==
    'gradient'`` it is the mean cross-entropy gradient of the batch; for ``'weight_delta'`` it is
    ``weights_after - weights_before`` of ``local_training``. Defenses may withhold entries: attacks use the
    keys present. ``labels`` is set only when the labels leaked. Inputs enter the model normalised by
    ``(x - mean) / std`` with ``x`` in [0, 1].
    """

    model_spec: ModelSpec
    weights: dict[str, torch.Tensor]
    update: dict[str, torch.Tensor]
    input_shape: tuple[int, int, int]
    batch_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    update_kind: UpdateKind = "gradient"
    local_training: LocalTraining | None = None
    labels: torch.Tensor | None = None
    model_mode: Literal["train", "eval"] = "train"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # -- checks -----------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``CaptureError`` naming the first key, tensor or field that is wrong."""
        if self.update_kind not in ("gradient", "weight_delta"):
            raise CaptureError(f"update_kind must be 'gradient' or 'weight_delta', got {self.update_kind!r}")
        if self.update_kind == "weight_delta" and self.local_training is None:
            raise CaptureError("a 'weight_delta' update needs local_training (steps, lr, batch_size)")
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise CaptureError(f"input_shape must be (C, H, W), got {self.input_shape}")
        if self.batch_size < 1 or self.num_classes < 2:
            raise CaptureError(f"need batch_size >= 1 and num_classes >= 2, got {self.batch_size}, {self.num_classes}")
        channels = self.input_shape[0]
        if len(self.mean) != channels or len(self.std) != channels:
            raise CaptureError(f"mean and std need {channels} entries (one per channel), got {self.mean}, {self.std}")
        if any(s <= 0 for s in self.std):
            raise CaptureError(f"std must be positive, got {self.std}")
        if not self.update:
            raise CaptureError("the update is empty: no gradient or weight delta to attack")
        params = dict(self.model_spec.build().named_parameters())
        for name, tensor in self.update.items():
            if name not in params:
                raise CaptureError(
                    f"update key {name!r} is not a parameter of model {self.model_spec.name!r} "
                    f"(parameters: {', '.join(list(params)[:6])}, ...)"
                )
            if tuple(tensor.shape) != tuple(params[name].shape):
                raise CaptureError(
                    f"update tensor {name!r} has shape {tuple(tensor.shape)}, "
                    f"model {self.model_spec.name!r} expects {tuple(params[name].shape)}"
                )
            if not torch.isfinite(tensor).all():
                raise CaptureError(f"update tensor {name!r} contains NaN or Inf")
        for name in params:
            if name not in self.weights:
                raise CaptureError(f"weights are missing parameter {name!r} of model {self.model_spec.name!r}")
        if self.labels is not None and (self.labels.ndim != 1 or self.labels.numel() != self.batch_size):
            raise CaptureError(f"leaked labels must have shape ({self.batch_size},), got {tuple(self.labels.shape)}")

    # -- derived views ---------------------------------------------------------------------------
    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The architecture with the weights the server sent, on ``device``, in ``model_mode``."""
        model = self.model_spec.build()
        missing, unexpected = model.load_state_dict(self.weights, strict=False)
        if unexpected:
            raise CaptureError(f"weights hold keys the model {self.model_spec.name!r} lacks: {unexpected[:5]}")
        param_names = {n for n, _ in model.named_parameters()}
        if missing_params := [m for m in missing if m in param_names]:
            raise CaptureError(f"weights are missing parameters: {missing_params[:5]}")
        model.train(self.model_mode == "train")
        return model.to(device)

    def gradient_estimate(self) -> dict[str, torch.Tensor]:
        """The update as a mean gradient: itself, or ``-delta / (lr * steps)`` for a weight delta."""
        if self.update_kind == "gradient":
            return self.update
        assert self.local_training is not None
        scale = -1.0 / (self.local_training.lr * self.local_training.steps)
        return {k: v * scale for k, v in self.update.items()}

    def normalization(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` shaped ``(C, 1, 1)`` for broadcasting over images."""
        mean = torch.tensor(self.mean, device=device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=device).view(-1, 1, 1)
        return mean, std

    def with_update(self, update: dict[str, torch.Tensor], **info: Any) -> Observation:
        """A copy with another update (what a defense returns), recording ``info``."""
        return replace(self, update=update, info={**self.info, **info})

    @property
    def num_pixels(self) -> int:
        return math.prod(self.input_shape)


@dataclass(frozen=True)
class GroundTruth:
    """The private batch: pixels in [0, 1] ``(B, C, H, W)`` and labels ``(B,)``. Never given to an attack."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.inputs.ndim != 4 or self.labels.shape != (self.inputs.shape[0],):
            raise CaptureError(
                f"ground truth needs inputs (B, C, H, W) and labels (B,), got {tuple(self.inputs.shape)} "
                f"and {tuple(self.labels.shape)}"
            )
