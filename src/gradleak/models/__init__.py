"""Model zoo written here (torchvision is not available): each model is registered by name.

``build_model(name, in_channels=..., num_classes=..., image_size=..., **kwargs)`` is the single entry point,
so that a capture can store ``(name, kwargs)`` and rebuild the exact architecture in another process.
"""

from __future__ import annotations

from torch import nn

from gradleak.registry import Registry

MODELS: Registry[nn.Module] = Registry("model")


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Instantiate a registered model; unknown names and bad settings raise ``ConfigError``."""
    return MODELS.build(name, **kwargs)


# Registration happens on import of each module.
from gradleak.models import convnet, lenet, mlp, resnet  # noqa: E402,F401
from gradleak.models import cnn6, imprint  # noqa: E402,F401

__all__ = ["MODELS", "build_model"]
