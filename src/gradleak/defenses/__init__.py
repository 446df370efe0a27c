"""Defenses by name: ``build_defense("gaussian", std=1e-2)``; each family in its own module.

=====================  ========================  =====================================================
name                   class                     acts on
=====================  ========================  =====================================================
dpsgd                  dp.DPSGD                  the step: Opacus per-example clipping + noise, epsilon
microbatch_dpsgd       dp.MicrobatchDPSGD        the step: TF-Privacy microbatch clipping + noise
clipping               clipping.GradientClipping the update: global L2 norm
gaussian, laplacian    noise.*                   the update: additive noise
pruning                pruning.Pruning           the update: magnitude (top-k) sparsification
quantization           quantization.Quantization the update: fp16, int8, sign
secure_aggregation     secure_aggregation.*      the aggregation: the server sees the sum of N clients
label_hiding           label_hiding.LabelHiding  the classifier head's update: shuffled or withheld
soteria                representation.Soteria    the head's update: representation pruning
=====================  ========================  =====================================================
"""

from __future__ import annotations

from typing import Any

from gradleak.defenses import (  # noqa: F401  (registers)
    clipping,
    dp,
    label_hiding,
    noise,
    pruning,
    quantization,
    representation,
    secure_aggregation,
)
from gradleak.defenses.base import (
    DEFENSES,
    ClientContext,
    Defense,
    Privacy,
    Schedule,
    defended_update,
)
from gradleak.errors import ConfigError


def build_defense(name: str | None, **kwargs: Any) -> Defense | None:
    """A defense by registry name (``None`` or ``"none"``: no defense). It lives in the package, which has
    imported every family (each registers itself in ``DEFENSES``), so every name is found."""
    if name is None or name.lower() == "none":
        if kwargs:
            raise ConfigError(f"defense settings {kwargs} given without a defense")
        return None
    return DEFENSES.build(name, **kwargs)


__all__ = [
    "DEFENSES", "ClientContext", "Defense", "Privacy", "Schedule", "build_defense", "defended_update",
]
