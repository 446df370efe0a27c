"""What one training example looks like to the model, by kind: images, token sequences or feature vectors.

The attacker knows the input's description (a server knows what its model consumes) but never its content.
Each kind says how candidates are laid out and mapped to what the model reads: images are pixels in [0, 1]
normalised per channel, token sequences are ids below the vocabulary size, feature vectors are real numbers
normalised per feature. ``input_spec_from_json`` is the one place metadata from a file becomes a spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

import torch

from gradleak import limits
from gradleak.errors import CaptureError

InputKind = Literal["image", "tokens", "features"]
INPUT_KINDS: tuple[str, ...] = ("image", "tokens", "features")


def _positive_int(value: Any, what: str) -> int:
    # bool is an int in Python; a JSON `true` is not a size
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CaptureError(f"{what} must be a positive integer, got {value!r}")
    return value


def _finite_floats(values: Any, what: str, count: int, positive: bool = False) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or len(values) != count:
        raise CaptureError(f"{what} must be a list of {count} numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CaptureError(f"{what} must hold finite numbers, got {v!r}")
        if positive and v <= 0:
            raise CaptureError(f"{what} must hold positive numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class ImageInput:
    """Images ``(C, H, W)``; pixels in [0, 1] enter the model as ``(x - mean) / std`` per channel."""

    kind: ClassVar[str] = "image"
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.shape, tuple) or len(self.shape) != 3:
            raise CaptureError(f"input_shape must be (C, H, W), got {self.shape!r}")
        for s in self.shape:
            _positive_int(s, f"input_shape {self.shape!r}")
        limits.check("input_elements", math.prod(self.shape), f"input_shape {self.shape} (elements per image)")
        object.__setattr__(self, "mean", _finite_floats(
            list(self.mean), f"mean (one per channel of {self.shape[0]})", self.shape[0]))
        object.__setattr__(self, "std", _finite_floats(
            list(self.std), f"std (one per channel of {self.shape[0]})", self.shape[0], positive=True))

    def normalization(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` shaped ``(C, 1, 1)`` for broadcasting over images."""
        return (torch.tensor(self.mean, device=device).view(-1, 1, 1),
                torch.tensor(self.std, device=device).view(-1, 1, 1))

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> what the model reads."""
        mean, std = self.normalization(x.device)
        return (x - mean.to(x.dtype)) / std.to(x.dtype)

    def from_model(self, z: torch.Tensor) -> torch.Tensor:
        """What the model reads -> pixels, clamped to [0, 1]."""
        mean, std = self.normalization(z.device)
        return (z * std + mean).clamp(0.0, 1.0)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class TokenInput:
    """Token sequences of ``seq_len`` ids below ``vocab_size``. ``pad_token_id`` marks padding (masked out of
    attention and loss); ``tokenizer`` names the tokenizer when the attacker knows it."""

    kind: ClassVar[str] = "tokens"
    seq_len: int
    vocab_size: int
    pad_token_id: int | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        _positive_int(self.seq_len, "seq_len")
        _positive_int(self.vocab_size, "vocab_size")
        limits.check("seq_len", self.seq_len, "seq_len")
        limits.check("vocab_size", self.vocab_size, "vocab_size")
        if self.pad_token_id is not None and (
            isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int)
            or not 0 <= self.pad_token_id < self.vocab_size
        ):
            raise CaptureError(f"pad_token_id must be an integer in [0, {self.vocab_size}), got {self.pad_token_id!r}")
        if self.tokenizer is not None and not isinstance(self.tokenizer, str):
            raise CaptureError(f"tokenizer must be a name (string), got {self.tokenizer!r}")

    @property
    def shape(self) -> tuple[int]:
        return (self.seq_len,)

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor | None:
        """1 where a real token is, 0 on padding; ``None`` when there is no padding token."""
        if self.pad_token_id is None:
            return None
        return (ids != self.pad_token_id).long()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq_len": self.seq_len, "vocab_size": self.vocab_size,
                "pad_token_id": self.pad_token_id, "tokenizer": self.tokenizer}


@dataclass(frozen=True)
class FeatureInput:
    """Feature vectors (tabular records) of ``num_features`` reals, entering the model as ``(x - mean) / std``
    (identity by default); ``bounds`` (low, high), when known, constrain a reconstruction."""

    kind: ClassVar[str] = "features"
    num_features: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    bounds: tuple[float, float] | None = None
    names: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        _positive_int(self.num_features, "num_features")
        limits.check("input_elements", self.num_features, "num_features")
        if self.mean is not None:
            _finite_floats(list(self.mean), "feature mean", self.num_features)
        if self.std is not None:
            _finite_floats(list(self.std), "feature std", self.num_features, positive=True)
        if self.bounds is not None:
            low, high = _finite_floats(list(self.bounds), "feature bounds", 2)
            if not low < high:
                raise CaptureError(f"feature bounds need low < high, got {self.bounds}")

    @property
    def shape(self) -> tuple[int]:
        return (self.num_features,)

    def normalization(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.zeros(self.num_features) if self.mean is None else torch.tensor(self.mean)
        std = torch.ones(self.num_features) if self.std is None else torch.tensor(self.std)
        return mean.to(device), std.to(device)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.normalization(x.device)
        return (x - mean.to(x.dtype)) / std.to(x.dtype)

    def from_model(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self.normalization(z.device)
        x = z * std + mean
        return x if self.bounds is None else x.clamp(*self.bounds)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_features": self.num_features,
                "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std),
                "bounds": None if self.bounds is None else list(self.bounds)}


InputSpec = Union[ImageInput, TokenInput, FeatureInput]


def input_spec_from_json(data: Any) -> InputSpec:
    """The spec a capture's ``inputs`` metadata describes; anything malformed raises ``CaptureError``."""
    if not isinstance(data, dict):
        raise CaptureError(f"'inputs' must be an object with a 'kind', got {type(data).__name__}")
    kind = data.get("kind")
    try:
        if kind == "image":
            shape = data.get("shape")
            if not isinstance(shape, list):
                raise CaptureError(f"inputs.shape must be a list (C, H, W), got {shape!r}")
            mean, std = data.get("mean"), data.get("std")
            if not isinstance(mean, list) or not isinstance(std, list):
                raise CaptureError("inputs.mean and inputs.std must be lists of numbers")
            return ImageInput(tuple(shape), tuple(mean), tuple(std))  # type: ignore[arg-type]
        if kind == "tokens":
            return TokenInput(data.get("seq_len"), data.get("vocab_size"), data.get("pad_token_id"),  # type: ignore[arg-type]
                              data.get("tokenizer"))
        if kind == "features":
            def opt(key: str) -> tuple | None:
                v = data.get(key)
                if v is not None and not isinstance(v, list):
                    raise CaptureError(f"inputs.{key} must be a list or null, got {v!r}")
                return None if v is None else tuple(v)
            return FeatureInput(data.get("num_features"), opt("mean"), opt("std"), opt("bounds"))  # type: ignore[arg-type]
    except TypeError as exc:  # e.g. unhashable or wrongly typed values
        raise CaptureError(f"malformed 'inputs' metadata ({exc})") from exc
    raise CaptureError(f"inputs.kind must be one of {list(INPUT_KINDS)}, got {kind!r}")
