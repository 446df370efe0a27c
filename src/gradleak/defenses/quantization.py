"""Quantization of the shared update (communication compression): ``fp16`` (IEEE half precision, the
DLG paper's half-precision test, Zhu et al. 2019), ``int8`` (per-tensor symmetric linear quantization,
scale ``max|g| / 127``) and ``sign`` (signSGD, Bernstein et al. 2018; ``sign_scale='l1'`` multiplies by the
tensor's mean magnitude as in scaled sign compression, Karimireddy et al. 2019, so a step keeps its size).
The server receives the dequantized float32 tensor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from gradleak.defenses.base import DEFENSES, ClientContext, Defense, Update
from gradleak.errors import ConfigError

KINDS = ("fp16", "int8", "sign")


def quantize(v: torch.Tensor, kind: str, sign_scale: str = "l1") -> torch.Tensor:
    """``v`` after a round trip through ``kind``, back in ``v``'s dtype."""
    if kind == "fp16":
        return v.half().to(v.dtype)
    if kind == "int8":
        scale = v.abs().max() / 127
        if scale == 0:
            return v.clone()
        return (v / scale).round().clamp(-127, 127) * scale
    if kind == "sign":
        s = torch.sign(v)
        return s * v.abs().mean() if sign_scale == "l1" else s
    raise ConfigError(f"quantization: kind must be one of {KINDS}, got {kind!r}")


@dataclass
class Quantization(Defense):
    """Quantize every tensor of the update to ``kind`` (fp16, int8, sign) and back."""

    name: ClassVar[str] = "quantization"
    strength: ClassVar[str] = "kind"
    kind: Literal["fp16", "int8", "sign"] = "fp16"
    sign_scale: Literal["l1", "none"] = "l1"

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"quantization: kind must be one of {KINDS}, got {self.kind!r}")
        if self.sign_scale not in ("l1", "none"):
            raise ConfigError(f"quantization: sign_scale must be 'l1' or 'none', got {self.sign_scale!r}")

    def transform(self, update: Update, context: ClientContext) -> Update:
        return {k: quantize(v, self.kind, self.sign_scale) for k, v in update.items()}


DEFENSES.register(Quantization.name)(Quantization)
