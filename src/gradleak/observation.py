"""What the attacker sees, and nothing else: the threat model as a type.

An ``Observation`` holds the model as the server sent it (``ModelSpec``: a registry name, the user's factory or a
Hugging Face config; plus weights), what one example looks like (``inputs``: images, token sequences or feature
vectors), what the client trains for (``task``: classification, causal or masked language modelling), the update
the client shared (gradients keyed by parameter name, or the weight delta of local training), and the metadata a
curious server can know. The private batch lives in ``GroundTruth``, which no attack receives.

An Observation is validated whole when it is made: every tensor against the model (names, shapes, floating dtype,
finite values), the input description against the model by one dry forward pass, the labels against the task.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from gradleak import limits
from gradleak.errors import CaptureError
from gradleak.inputs import FeatureInput, ImageInput, InputSpec, TokenInput
from gradleak.model_spec import ModelSpec
from gradleak.training_task import Task, forward

UpdateKind = Literal["gradient", "weight_delta"]

__all__ = ["BUFFER_STATISTICS", "GroundTruth", "LocalTraining", "ModelSpec", "Observation", "UpdateKind",
           "check_plain_tensor", "shared_buffer_names", "update_digest"]

#: the BatchNorm buffers whose change a client's update carries when it shares its state dict (``share_buffers``)
BUFFER_STATISTICS: tuple[str, ...] = ("running_mean", "running_var")


def shared_buffer_names(model: nn.Module) -> list[str]:
    """State-dict names of the running statistics of ``model``'s BatchNorm layers (``running_mean`` and
    ``running_var`` of each layer that tracks them): what a client that sends its state dict shares beside its
    parameters. ``num_batches_tracked`` is left out: an integer count of train-mode forward passes that the
    protocol's metadata (one pass for FedSGD, ``local_training.steps`` for FedAvg) already states."""
    names = []
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats \
                and module.running_mean is not None:
            names += [f"{prefix}.{b}" if prefix else b for b in BUFFER_STATISTICS]
    return names


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class LocalTraining:
    """The client's local schedule for a FedAvg update: ``steps`` SGD steps of ``lr`` on mini-batches of
    ``batch_size`` taken in order (wrapping around) from the client's data."""

    steps: int
    lr: float
    batch_size: int

    def __post_init__(self) -> None:
        if not _is_int(self.steps) or not _is_int(self.batch_size) or self.steps < 1 or self.batch_size < 1:
            raise CaptureError(f"local training needs integer steps >= 1 and batch_size >= 1, got {self}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or not self.lr > 0:
            raise CaptureError(f"local training needs a finite lr > 0, got {self.lr!r}")
        limits.check("local_steps", self.steps, "local training steps")
        limits.check("batch_size", self.batch_size, "local batch_size")


def update_digest(update: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the update's names, dtypes, shapes and bytes: the id a capture and its truth share."""
    h = hashlib.sha256()
    for name in sorted(update):
        t = update[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_plain_tensor(tensor: Any, what: str, *, cpu: bool = True) -> None:
    """A tensor read from a file must be dense (strided), real (floating point, integer or boolean, not complex or
    quantized) and hold its values (not ``meta``; with ``cpu``, in CPU memory): anything else reaches PyTorch's
    dispatcher in places that fail with its own traceback. ``what`` names the tensor for the error."""
    if not isinstance(tensor, torch.Tensor):
        raise CaptureError(f"{what} is a {type(tensor).__name__}, not a tensor")
    if tensor.is_meta or (cpu and tensor.device.type != "cpu"):
        raise CaptureError(f"{what} is a tensor on the {tensor.device.type!r} device; only tensors holding their "
                           f"values in CPU memory are read")
    if tensor.layout != torch.strided or tensor.is_nested:
        layout = "nested" if tensor.is_nested else str(tensor.layout).removeprefix("torch.")
        raise CaptureError(f"{what} is a {layout} tensor; only dense (strided) tensors are read")
    if tensor.dtype.is_complex or tensor.is_quantized:
        raise CaptureError(f"{what} has dtype {str(tensor.dtype).removeprefix('torch.')}; only real (floating point "
                           f"or integer) tensors are read")


def _check_tensors(tensors: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], what: str,
                   model_name: str) -> None:
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise CaptureError(f"{what} entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if name not in reference:
            kind = "parameter or BatchNorm running statistic" if what == "update" else "parameter"
            raise CaptureError(f"{what} key {name!r} is not a {kind} of model {model_name!r} "
                               f"(expected: {', '.join(list(reference)[:6])}, ...)")
        if tuple(tensor.shape) != tuple(reference[name].shape):
            raise CaptureError(f"{what} tensor {name!r} has shape {tuple(tensor.shape)}, model {model_name!r} "
                               f"expects {tuple(reference[name].shape)}")
        if reference[name].dtype.is_floating_point and not tensor.dtype.is_floating_point:
            raise CaptureError(f"{what} tensor {name!r} has dtype {tensor.dtype}; a floating-point tensor is expected")
        check_plain_tensor(tensor, f"{what} tensor {name!r}", cpu=False)
        if tensor.dtype.is_floating_point and not torch.isfinite(tensor).all():
            raise CaptureError(f"{what} tensor {name!r} contains NaN or Inf")


@dataclass(frozen=True)
class Observation:
    """Everything the attacker sees.

    ``update`` maps parameter names (as in ``model.named_parameters()``) to tensors. For ``update_kind ==
    'gradient'`` it is the gradient of the task's mean loss over the batch; for ``'weight_delta'`` it is
    ``weights_after - weights_before`` of ``local_training``. Defenses, frozen layers and adapters may leave
    entries out: attacks use the keys present. A client that shares its state dict also carries the change
    ``after - before`` of its BatchNorm running statistics under their state-dict names (``shared_buffer_names``;
    ``client_step(share_buffers=...)``): ``parameter_update`` and ``buffer_update`` split the two, and
    ``gradient_estimate`` holds parameters only. ``labels`` is set only when the labels leaked. Images enter the
    model normalised by ``(x - mean) / std`` with ``x`` in [0, 1].
    """

    model_spec: ModelSpec
    weights: dict[str, torch.Tensor]
    update: dict[str, torch.Tensor]
    inputs: InputSpec
    task: Task
    batch_size: int
    update_kind: UpdateKind = "gradient"
    local_training: LocalTraining | None = None
    labels: torch.Tensor | None = None
    model_mode: Literal["train", "eval"] = "train"
    info: dict[str, Any] = field(default_factory=dict)
    #: the state-dict names of the model's shareable BatchNorm buffers (set by ``validate``)
    _buffer_keys: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # -- checks -----------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``CaptureError`` naming the first key, tensor or field that is wrong."""
        if self.update_kind not in ("gradient", "weight_delta"):
            raise CaptureError(f"update_kind must be 'gradient' or 'weight_delta', got {self.update_kind!r}")
        if self.update_kind == "weight_delta" and self.local_training is None:
            raise CaptureError("a 'weight_delta' update needs local_training (steps, lr, batch_size)")
        if self.model_mode not in ("train", "eval"):
            raise CaptureError(f"model_mode must be 'train' or 'eval', got {self.model_mode!r}")
        if not isinstance(self.inputs, (ImageInput, TokenInput, FeatureInput)):
            raise CaptureError(f"inputs must be an ImageInput, TokenInput or FeatureInput, got {self.inputs!r}")
        if not isinstance(self.task, Task):
            raise CaptureError(f"task must be a Task, got {self.task!r}")
        if self.task.kind != "classification" and not isinstance(self.inputs, TokenInput):
            raise CaptureError(f"task {self.task.kind} needs token inputs, got {self.inputs.kind}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise CaptureError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        limits.check("batch_size", self.batch_size, "batch_size")
        limits.check("batch_elements", self.batch_size * math.prod(self.inputs.shape), "batch elements")
        if not isinstance(self.update, dict) or not self.update:
            raise CaptureError("the update is empty: no gradient or weight delta to attack")
        if not isinstance(self.weights, dict):
            raise CaptureError("weights must map parameter names to tensors")
        model = self.model_spec.build()
        params = dict(model.named_parameters())
        state = model.state_dict()
        buffers = shared_buffer_names(model)
        object.__setattr__(self, "_buffer_keys", frozenset(buffers))
        _check_tensors(self.update, {**params, **{b: state[b] for b in buffers}}, "update", self.model_spec.name)
        if not any(k in params for k in self.update):
            raise CaptureError("the update holds BatchNorm running statistics only: no gradient or weight delta of a "
                               "parameter to attack")
        _check_tensors(self.weights, state, "weights", self.model_spec.name)
        for name in params:
            if name not in self.weights:
                raise CaptureError(f"weights are missing parameter {name!r} of model {self.model_spec.name!r}")
        self._check_labels()
        self._dry_forward(model)

    def _check_labels(self) -> None:
        if self.labels is None:
            return
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype.is_floating_point \
                or self.labels.dtype.is_complex or self.labels.dtype == torch.bool:
            raise CaptureError("leaked labels must be an integer tensor")
        if self.task.kind == "classification":
            if self.labels.ndim != 1 or self.labels.numel() != self.batch_size:
                raise CaptureError(f"leaked labels must have shape ({self.batch_size},), got {tuple(self.labels.shape)}")
            assert self.task.num_classes is not None
            if self.labels.numel() and (self.labels.min() < 0 or self.labels.max() >= self.task.num_classes):
                raise CaptureError(f"leaked labels must lie in [0, {self.task.num_classes}), got "
                                   f"{self.labels.min().item()}..{self.labels.max().item()}")

    def _dry_forward(self, model: nn.Module) -> None:
        """One forward pass of one zero example: the input description must fit the model, and the output the task."""
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.weights.items()}, strict=False)
        model.eval()
        if isinstance(self.inputs, TokenInput):
            x = torch.zeros((1, self.inputs.seq_len), dtype=torch.long)
        else:
            x = torch.zeros((1, *self.inputs.shape))
        try:
            with torch.no_grad():
                logits = forward(model, x)
        except CaptureError:
            raise
        except Exception as exc:  # the model says the input does not fit: name the description
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CaptureError(f"inputs {self.inputs.to_json()} do not fit model {self.model_spec.name!r}: "
                               f"{first}") from exc
        expected = self.task.num_classes if self.task.kind == "classification" else getattr(
            self.inputs, "vocab_size", None)
        if logits.ndim < 2 or (expected is not None and logits.shape[-1] != expected):
            what = "num_classes" if self.task.kind == "classification" else "vocab_size"
            raise CaptureError(f"model {self.model_spec.name!r} outputs {tuple(logits.shape[1:])} per example, "
                               f"which does not fit {what} = {expected}")

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

    @property
    def parameter_update(self) -> dict[str, torch.Tensor]:
        """The update's parameter entries: the gradient or weight delta, without any BatchNorm buffer change."""
        return {k: v for k, v in self.update.items() if k not in self._buffer_keys}

    @property
    def buffer_update(self) -> dict[str, torch.Tensor]:
        """The change ``after - before`` of the BatchNorm running statistics the client shared (empty when it
        shared parameters only)."""
        return {k: v for k, v in self.update.items() if k in self._buffer_keys}

    def gradient_estimate(self) -> dict[str, torch.Tensor]:
        """The parameter update as a mean gradient: itself, or ``-delta / (lr * steps)`` for a weight delta.
        BatchNorm buffer changes are no gradient and are left out (``buffer_update`` holds them)."""
        params = self.parameter_update
        if self.update_kind == "gradient":
            return params
        assert self.local_training is not None
        scale = -1.0 / (self.local_training.lr * self.local_training.steps)
        return {k: v * scale for k, v in params.items()}

    def with_update(self, update: dict[str, torch.Tensor], **info: Any) -> Observation:
        """A copy with another update (what a defense returns), recording ``info``."""
        return replace(self, update=update, info={**self.info, **info})

    @property
    def input_kind(self) -> str:
        return self.inputs.kind

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example: (C, H, W) images, (L,) token sequences, (F,) feature vectors."""
        return tuple(self.inputs.shape)

    @property
    def num_classes(self) -> int:
        if self.task.num_classes is None:
            raise CaptureError(f"a {self.task.kind} observation has no classes")
        return self.task.num_classes

    @property
    def image(self) -> ImageInput:
        """The image description; a clear error for other input kinds."""
        if not isinstance(self.inputs, ImageInput):
            raise CaptureError(f"this needs image inputs; the observation holds {self.inputs.kind}")
        return self.inputs

    @property
    def mean(self) -> tuple[float, ...]:
        """The images' per-channel normalisation mean (images only: a clear error for tokens and features)."""
        return self.image.mean

    @property
    def std(self) -> tuple[float, ...]:
        """The images' per-channel normalisation std (images only)."""
        return self.image.std

    def normalization(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` broadcastable over one example: ``(C, 1, 1)`` for images, ``(F,)`` for features."""
        if isinstance(self.inputs, TokenInput):
            raise CaptureError("token inputs have no normalisation")
        return self.inputs.normalization(device)

    @property
    def example_size(self) -> int:
        """How many values one example holds: C*H*W for images, F for feature vectors, L for token sequences (the
        width of a fully connected layer that reads the flattened input)."""
        return math.prod(self.inputs.shape)


@dataclass(frozen=True)
class GroundTruth:
    """The private batch, never given to an attack: images ``(B, C, H, W)`` with pixels in [0, 1], token ids
    ``(B, L)`` or feature vectors ``(B, F)``; ``labels`` ``(B,)`` for classification (``None`` for language
    modelling); ``attention_mask`` ``(B, L)`` for padded token sequences."""

    inputs: torch.Tensor
    labels: torch.Tensor | None
    attention_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        x = self.inputs
        if not isinstance(x, torch.Tensor) or x.ndim < 2:
            raise CaptureError(f"ground truth inputs must be a batch tensor, got {getattr(x, 'shape', x)!r}")
        if x.dtype.is_floating_point:
            if not torch.isfinite(x).all():
                raise CaptureError("ground truth inputs contain NaN or Inf")
            if x.ndim == 4 and x.numel() and (x.min() < 0 or x.max() > 1):
                raise CaptureError(f"ground truth pixels must lie in [0, 1], got {x.min().item():.3g}.."
                                   f"{x.max().item():.3g}")
        elif x.dtype.is_complex or x.dtype == torch.bool:
            raise CaptureError(f"ground truth inputs have dtype {x.dtype}")
        elif x.ndim != 2:
            raise CaptureError(f"ground truth token ids must be (B, L), got {tuple(x.shape)}")
        if self.labels is not None:
            if self.labels.dtype.is_floating_point or self.labels.dtype.is_complex or self.labels.dtype == torch.bool \
                    or self.labels.shape != (x.shape[0],):
                raise CaptureError(f"ground truth labels must be integers shaped ({x.shape[0]},), got "
                                   f"{self.labels.dtype} {tuple(self.labels.shape)}")
        if self.attention_mask is not None and self.attention_mask.shape != x.shape:
            raise CaptureError(f"attention_mask must have the shape of the token ids {tuple(x.shape)}")

    @property
    def kind(self) -> str:
        if not self.inputs.dtype.is_floating_point:
            return "tokens"
        return "image" if self.inputs.ndim == 4 else "features"

    def check_against(self, obs: Observation) -> None:
        """The truth must describe the observed batch: same kind, shape, batch size and label range."""
        if self.kind != obs.inputs.kind:
            raise CaptureError(f"the truth holds {self.kind} but the capture describes {obs.inputs.kind}")
        if tuple(self.inputs.shape) != (obs.batch_size, *obs.input_shape):
            raise CaptureError(f"the truth holds inputs {tuple(self.inputs.shape)}, the capture describes "
                               f"{(obs.batch_size, *obs.input_shape)}")
        if self.labels is None and obs.task.kind == "classification":
            raise CaptureError("the truth has no 'labels' tensor, which a classification capture's truth needs "
                               "(the labels are scored)")
        if self.labels is not None and obs.task.kind == "classification" and self.labels.numel():
            if self.labels.min() < 0 or self.labels.max() >= obs.num_classes:
                raise CaptureError(f"truth labels must lie in [0, {obs.num_classes})")
        if self.kind == "tokens" and self.inputs.numel():
            vocab = obs.inputs.vocab_size  # type: ignore[union-attr]
            if self.inputs.min() < 0 or self.inputs.max() >= vocab:
                raise CaptureError(f"truth token ids must lie in [0, {vocab})")
