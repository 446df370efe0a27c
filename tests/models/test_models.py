from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.errors import ConfigError
from gradleak.models import MODELS, build_model


@pytest.mark.parametrize("name", ["lenet", "mlp", "convnet", "resnet18"])
@pytest.mark.parametrize("channels", [1, 3])
def test_models_map_images_to_logits(name: str, channels: int) -> None:
    kwargs = {"width": 8} if name in ("convnet", "resnet18") else {}
    model = build_model(name, in_channels=channels, num_classes=7, image_size=32, **kwargs)
    out = model(torch.rand(2, channels, 32, 32))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lenet_is_the_dlg_architecture() -> None:
    model = build_model("lenet", in_channels=3, num_classes=100, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(12, (5, 5), (2, 2)), (12, (5, 5), (2, 2)), (12, (5, 5), (1, 1))]
    assert sum(isinstance(m, nn.Sigmoid) for m in model.modules()) == 3
    assert model.classifier.in_features == 768
    params = torch.cat([p.flatten() for p in model.parameters()])
    assert params.min() >= -0.5 and params.max() <= 0.5 and params.std() > 0.25  # U(-0.5, 0.5): std 0.289
    default = build_model("lenet", uniform_init=False)
    assert torch.cat([p.flatten() for p in default.parameters()]).abs().max() < 0.5


def test_convnet_width_and_norms() -> None:
    wide = build_model("convnet", width=64)
    assert wide.classifier.in_features == 256
    assert any(isinstance(m, nn.BatchNorm2d) for m in wide.modules())
    group = build_model("resnet18", width=16, norm="group")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in group.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in group.modules())


def test_unknown_model_and_bad_setting_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model 'alexnet'"):
        build_model("alexnet")
    with pytest.raises(ConfigError, match="model 'lenet' rejected its settings"):
        build_model("lenet", depth=5)
    assert {"lenet", "mlp", "convnet", "resnet18"} <= set(MODELS.names())
