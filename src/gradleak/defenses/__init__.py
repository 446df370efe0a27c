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
    build_defense,
    defended_update,
)

__all__ = [
    "DEFENSES", "ClientContext", "Defense", "Privacy", "Schedule", "build_defense", "defended_update",
]
