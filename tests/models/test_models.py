from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from gradleak.errors import ConfigError
from gradleak.model_spec import ModelSpec
from gradleak.models import MODELS, build_model


@pytest.mark.parametrize("name", ["lenet", "mlp", "convnet", "resnet18", "resnet18-imagenet"])
@pytest.mark.parametrize("channels", [1, 3])
def test_models_map_images_to_logits(name: str, channels: int) -> None:
    kwargs = {"width": 8} if name in ("convnet", "resnet18", "resnet18-imagenet") else {}
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


def _paper_convnet(width: int, channels: int, classes: int) -> nn.Sequential:
    """The layer list of Inverting Gradients' ConvNet as the paper's code names it (Geiping et al. 2020)."""
    plan = [(channels, width), (width, 2 * width), (2 * width, 2 * width), (2 * width, 4 * width),
            (4 * width, 4 * width), (4 * width, 4 * width), "pool0", (4 * width, 4 * width), (4 * width, 4 * width),
            "pool1"]
    layers: list[tuple[str, nn.Module]] = []
    i = 0
    for step in plan:
        if isinstance(step, str):
            layers.append((step, nn.MaxPool2d(3)))
            continue
        layers += [(f"conv{i}", nn.Conv2d(*step, kernel_size=3, padding=1)), (f"bn{i}", nn.BatchNorm2d(step[1])),
                   (f"relu{i}", nn.ReLU())]
        i += 1
    layers += [("flatten", nn.Flatten()), ("linear", nn.Linear(36 * width, classes))]
    return nn.Sequential(OrderedDict(layers))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_convnet_is_the_inverting_gradients_convnet(mode: str) -> None:
    ours = build_model("convnet", in_channels=3, num_classes=10, image_size=32, width=64)
    paper = _paper_convnet(64, 3, 10)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in paper.parameters()) == 2_904_970
    assert ours.classifier.in_features == 2304
    kinds = [type(m) for m in ours.modules() if not isinstance(m, (nn.Sequential, type(ours)))]
    assert kinds == [type(m) for m in paper.children() if not isinstance(m, nn.Flatten)]
    ours_state, paper_state = ours.state_dict(), paper.state_dict()
    torch.manual_seed(0)
    for value in ours_state.values():  # non-trivial BatchNorm statistics so eval mode is tested too
        if value.is_floating_point():
            value.copy_(torch.randn_like(value) * 0.1 + (1.0 if value.dim() == 1 else 0.0))
    paper.load_state_dict(dict(zip(paper_state, ours_state.values(), strict=True)))
    ours.train(mode == "train")
    paper.train(mode == "train")
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(ours(x), paper(x))


def test_convnet_width_and_norms() -> None:
    wide = build_model("convnet", width=64)
    assert wide.classifier.in_features == 2304
    assert any(isinstance(m, nn.BatchNorm2d) for m in wide.modules())
    group = build_model("resnet18", width=16, norm="group")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in group.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in group.modules())


def test_unknown_model_and_bad_setting_raise_clear_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model 'alexnet'"):
        build_model("alexnet")
    with pytest.raises(ConfigError, match="model 'lenet' rejected its settings"):
        build_model("lenet", depth=5)
    assert {"lenet", "mlp", "convnet", "resnet18", "resnet18-imagenet"} <= set(MODELS.names())


def _resnet18_table1(channels: int, classes: int) -> list[tuple]:
    """ResNet-18's layers in order as He et al. (2016, Table 1) list them: 7x7/2 conv, 3x3/2 max pool, four stages
    of two BasicBlocks (3x3 convs; the first block of stages 2-4 strides 2 and has a 1x1/2 projection shortcut),
    global average pooling and the fully connected layer (as torchvision's ``resnet18`` builds it)."""
    layers: list[tuple] = [("conv", channels, 64, 7, 2, 3), ("maxpool", 3, 2, 1)]
    c_in = 64
    for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [("conv", c_in, c_out, 3, stride, 1), ("conv", c_out, c_out, 3, 1, 1)]
        if stride != 1:
            layers.append(("conv", c_in, c_out, 1, stride, 0))
        layers += [("conv", c_out, c_out, 3, 1, 1), ("conv", c_out, c_out, 3, 1, 1)]
        c_in = c_out
    return layers + [("linear", 512, classes)]


def _layer_list(model: nn.Module) -> list[tuple]:
    out: list[tuple] = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            out.append(("conv", m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]))
        elif isinstance(m, nn.MaxPool2d):
            out.append(("maxpool", m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.Linear):
            out.append(("linear", m.in_features, m.out_features))
    return out


def test_resnet18_imagenet_is_the_papers_layout() -> None:
    full = build_model("resnet18-imagenet", in_channels=3, num_classes=1000, image_size=224)
    assert _layer_list(full) == _resnet18_table1(3, 1000)
    assert sum(p.numel() for p in full.parameters()) == 11_689_512  # torchvision's resnet18
    assert sum(isinstance(m, nn.BatchNorm2d) for m in full.modules()) == 20
    photos = build_model("resnet18-imagenet", in_channels=3, num_classes=10, image_size=128)
    assert sum(p.numel() for p in photos.parameters()) == 11_689_512 - 990 * 513
    # the CIFAR layout keeps its 3x3 stride-1 stem and no pooling: the two differ only there
    cifar = build_model("resnet18", in_channels=3, num_classes=10, image_size=32)
    assert _layer_list(cifar)[0] == ("conv", 3, 64, 3, 1, 1) and _layer_list(cifar)[1:] == _layer_list(photos)[2:]


def test_resnet18_imagenet_runs_at_128_and_224_and_rebuilds_from_its_spec() -> None:
    spec = ModelSpec("resnet18-imagenet", {"in_channels": 3, "num_classes": 10, "image_size": 224})
    torch.manual_seed(0)
    model = ModelSpec.from_json(spec.to_json()).build()
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), spec.build().state_dict().values()))
    last: list[torch.Size] = []
    model.stages.register_forward_hook(lambda _m, _i, out: last.append(out.shape))
    for size, side in [(128, 4), (224, 7)]:
        out = model(torch.rand(2, 3, size, size))
        assert out.shape == (2, 10) and last[-1] == (2, 512, side, side)  # the input's side / 32
        out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
