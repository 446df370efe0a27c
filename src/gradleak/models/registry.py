"""The model registry and its one entry point, apart from the zoo so that each model module can register itself
without importing the package that imports it (``gradleak.models`` imports every model module).

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
