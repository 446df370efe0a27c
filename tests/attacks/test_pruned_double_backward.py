"""The autograd path's twin: convolutions that skip the weight's second-order gradient give torch.func's
gradient; several observations and restarts (torch.func) are each matched against their own update."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.attacks.optimization import EngineConfig, UpdateMatcher
from gradleak.attacks.optimization.pruned_double_backward import PrunedConv2d
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, make_victim
from gradleak.models import MODELS


def _inputs(obs, n: int, r: int, soft: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, r, obs.batch_size, *obs.input_shape, generator=gen)
    if soft:
        return xs, torch.randn(n, r, obs.batch_size, obs.num_classes, generator=gen)
    return xs, torch.randint(0, obs.num_classes, (n, r, obs.batch_size), generator=gen)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def test_several_observations_each_matched_against_their_own_update() -> None:
    victims = [make_victim(ExperimentConfig(dataset="faces", model="lenet", indices=(i,), leak_labels=True))[0]
               for i in (0, 7)]
    matcher = UpdateMatcher(victims, EngineConfig(objective="l2"), "cpu")
    xs, ys = _inputs(victims[0], 2, 3, soft=False)
    values = matcher.value_and_grad(xs, ys, False)[0]
    swapped = matcher.value_and_grad(xs.flip(0), ys.flip(0), False)[0]
    assert not torch.allclose(values, swapped.flip(0))  # the targets differ, and each copy sees its own


def test_layer_weights_apply_per_parameter() -> None:
    obs, _ = make_victim(ExperimentConfig(dataset="faces", model="lenet", indices=(0,), leak_labels=True))
    xs, ys = _inputs(obs, 1, 2, soft=False)
    plain = UpdateMatcher([obs], EngineConfig(objective="l2"), "cpu").value_and_grad(xs, ys, False)[0]
    half = UpdateMatcher([obs], EngineConfig(objective="l2", layer_weights={k: 0.5 for k in obs.update}),
                         "cpu").value_and_grad(xs, ys, False)[0]
    assert torch.allclose(half, 0.5 * plain, rtol=1e-5)
    with pytest.raises(ConfigError, match="layer_weights.*nope"):
        UpdateMatcher([obs], EngineConfig(objective="l2", layer_weights={"nope": 2.0}), "cpu")


class _ConvVariety(nn.Module):
    """Convolutions the pruned double backward must get right: dilated without bias, strided, unpadded, and
    one that does not read the candidate directly (an elementwise layer comes first)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 16) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Tanh(),
            nn.Conv2d(in_channels, 5, 3, padding=2, dilation=2, bias=False), nn.Sigmoid(),
            nn.Conv2d(5, 6, 4, stride=2, padding=1), nn.Softplus(),
            nn.Conv2d(6, 4, 3), nn.Sigmoid(),
        )
        side = image_size // 2 - 2
        self.head = nn.Linear(4 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).flatten(1))


if "test-conv-variety" not in MODELS.names():
    MODELS.register("test-conv-variety")(_ConvVariety)


@pytest.mark.parametrize("model, kwargs", [("resnet18", {"width": 4}), ("test-conv-variety", {}),
                                           ("convnet", {"width": 4})])
@pytest.mark.parametrize("soft", [False, True])
def test_single_restart_twin_skips_the_weight_second_order_and_agrees_with_vmap(model, kwargs, soft) -> None:
    """One observation, one restart: the eager twin's convolutions (prune_double_backward) give the gradient of
    torch.func's generic double backward, on strided, 1x1, biased and residual convolutions."""
    obs, _ = make_victim(ExperimentConfig(dataset="photos", image_size=32, model=model, model_kwargs=kwargs,
                                          indices=(3, 5), batch_size=2, leak_labels=True))
    matcher = UpdateMatcher([obs], EngineConfig(objective="cosine", priors={"tv": 0.1}), "cpu")
    xs, ys = _inputs(obs, 1, 1, soft)
    reference = matcher.evaluator.functional(xs, ys, soft)
    fast = matcher.value_and_grad(xs, ys, soft)
    assert any(isinstance(m, PrunedConv2d) for m in matcher.evaluator._twin[0].modules())
    assert torch.allclose(fast[0], reference[0], rtol=1e-5, atol=1e-6)
    assert _relative_error(fast[1], reference[1]) < 1e-4
    if soft:
        assert _relative_error(fast[2], reference[2]) < 1e-4
