"""Model zoo written here (torchvision is not available): each model registers itself by name in
``gradleak.models.registry``; importing this package imports every model module, so the registry is complete.
"""

from __future__ import annotations

from gradleak.models import cnn6, convnet, imprint, lenet, mlp, resnet  # noqa: F401  (registration on import)
from gradleak.models.registry import MODELS, build_model

__all__ = ["MODELS", "build_model"]
