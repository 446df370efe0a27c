"""Restarts folded into channel groups: the stacked model agrees with torch.func's vmap on every model it
accepts, and the engine falls back to vmap, with a warning it records, on the ones it cannot fold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.attacks.optimization import EngineConfig, UpdateMatcher
from gradleak.attacks.optimization.channel_stacking import NotStackable, StackedConv2d, stack_model
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


def _stacks(matcher: UpdateMatcher, xs: torch.Tensor, ys: torch.Tensor, soft: bool) -> bool:
    """Whether the engine runs these restarts as one channel-stacked model (and says so)."""
    stacked = matcher.evaluator._eager_model(xs, ys, soft) is not None
    assert matcher.evaluator.record["evaluation"] == ("autograd" if stacked else "torch.func")
    return stacked


def _agree(matcher: UpdateMatcher, xs: torch.Tensor, ys: torch.Tensor, soft: bool) -> None:
    reference = matcher.evaluator.functional(xs, ys, soft)
    fast = matcher.value_and_grad(xs, ys, soft, coupled=False)
    assert torch.allclose(fast[0], reference[0], rtol=1e-4, atol=1e-6)
    assert _relative_error(fast[1], reference[1]) < 1e-3
    if soft:
        assert _relative_error(fast[2], reference[2]) < 1e-3
    assert float(reference[1].abs().sum()) > 0


@pytest.mark.parametrize("soft", [False, True])
def test_lenet_restarts_stack_and_agree_with_vmap(soft: bool) -> None:
    obs, _ = make_victim(ExperimentConfig(dataset="photos", image_size=16, model="lenet", indices=(3, 9),
                                          leak_labels=True))
    matcher = UpdateMatcher([obs], EngineConfig(objective="cosine", priors={"tv": 0.1}), "cpu")
    xs, ys = _inputs(obs, 1, 4, soft)
    assert _stacks(matcher, xs, ys, soft)  # chosen by the engine, not only possible
    _agree(matcher, xs, ys, soft)
    values, grads, _ = matcher.value_and_grad(xs, ys, soft)
    assert values.shape == (1, 4) and grads.shape == xs.shape


def test_several_observations_each_matched_against_their_own_update() -> None:
    victims = [make_victim(ExperimentConfig(dataset="faces", model="lenet", indices=(i,), leak_labels=True))[0]
               for i in (0, 7)]
    matcher = UpdateMatcher(victims, EngineConfig(objective="l2"), "cpu")
    xs, ys = _inputs(victims[0], 2, 3, soft=False)
    assert _stacks(matcher, xs, ys, False)
    _agree(matcher, xs, ys, False)
    values = matcher.value_and_grad(xs, ys, False)[0]
    swapped = matcher.value_and_grad(xs.flip(0), ys.flip(0), False)[0]
    assert not torch.allclose(values, swapped.flip(0))  # the targets differ, and each copy sees its own


@pytest.mark.parametrize("mode,norm", [("train", "batch"), ("eval", "batch"), ("train", "group")])
def test_convnet_with_normalisation_stacks(mode: str, norm: str) -> None:
    obs, _ = make_victim(ExperimentConfig(dataset="photos", model="convnet", model_kwargs={"width": 4, "norm": norm},
                                          indices=(3, 4), leak_labels=True, model_mode=mode, pretrain_steps=3))
    priors = {"tv": 0.1, "bn": 0.01} if norm == "batch" else {"tv": 0.1}
    matcher = UpdateMatcher([obs], EngineConfig(objective="cosine", priors=priors), "cpu")
    xs, ys = _inputs(obs, 1, 3, soft=False)
    assert _stacks(matcher, xs, ys, False)
    _agree(matcher, xs, ys, False)


def test_layer_weights_apply_per_parameter() -> None:
    obs, _ = make_victim(ExperimentConfig(dataset="faces", model="lenet", indices=(0,), leak_labels=True))
    xs, ys = _inputs(obs, 1, 2, soft=False)
    plain = UpdateMatcher([obs], EngineConfig(objective="l2"), "cpu").value_and_grad(xs, ys, False)[0]
    half = UpdateMatcher([obs], EngineConfig(objective="l2", layer_weights={k: 0.5 for k in obs.update}),
                         "cpu").value_and_grad(xs, ys, False)[0]
    assert torch.allclose(half, 0.5 * plain, rtol=1e-5)
    with pytest.raises(ConfigError, match="layer_weights.*nope"):
        UpdateMatcher([obs], EngineConfig(objective="l2", layer_weights={"nope": 2.0}), "cpu")


@pytest.mark.numerics  # the fallback is the vmap path itself: equal bit for bit (same path twice)
def test_models_that_cannot_fold_fall_back_to_vmap() -> None:
    obs, _ = make_victim(ExperimentConfig(dataset="photos", model="resnet18", model_kwargs={"norm": "group"},
                                          indices=(3,), leak_labels=True))
    with pytest.raises(NotStackable, match="cannot be folded"):
        stack_model(obs.build_model("cpu"), 2)
    matcher = UpdateMatcher([obs], EngineConfig(objective="cosine"), "cpu")
    xs, ys = _inputs(obs, 1, 2, soft=False)
    with pytest.warns(RuntimeWarning, match="falls back to torch.func"):
        values, grads, _ = matcher.value_and_grad(xs, ys, False)
    assert not _stacks(matcher, xs, ys, False)
    assert "cannot be folded" in matcher.evaluator.record["fallback"]
    reference = matcher.evaluator.functional(xs, ys, False)
    assert torch.equal(values, reference[0]) and torch.equal(grads, reference[1])


class _MixesChannels(nn.Module):
    """Only stackable layers, but a forward that centres over channels: folded, it would mix the copies while
    every shape stays valid, so only the engine's comparison with vmap can notice."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4 * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.conv(x))
        return self.head((h - h.mean(dim=1, keepdim=True)).flatten(1))


if "test-mixes-channels" not in MODELS.names():
    MODELS.register("test-mixes-channels")(_MixesChannels)


@pytest.mark.numerics  # the fallback is the vmap path itself: equal bit for bit (same path twice)
def test_a_forward_that_mixes_channels_is_caught_by_the_check() -> None:
    obs, _ = make_victim(ExperimentConfig(dataset="photos", image_size=8, model="test-mixes-channels", indices=(3,),
                                          leak_labels=True))
    stack_model(obs.build_model("cpu"), 2)  # the layers fold...
    matcher = UpdateMatcher([obs], EngineConfig(objective="l2"), "cpu")
    xs, ys = _inputs(obs, 1, 2, soft=False)
    with pytest.warns(RuntimeWarning, match="disagrees with torch.func"):
        values, grads, _ = matcher.value_and_grad(xs, ys, False)
    assert not _stacks(matcher, xs, ys, False)  # ...but disagree with vmap, so the engine does not use them
    reference = matcher.evaluator.functional(xs, ys, False)
    assert torch.equal(values, reference[0]) and torch.equal(grads, reference[1])


class _ConvVariety(nn.Module):
    """Convolutions the stacked double backward must get right: dilated without bias, strided, unpadded, and
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


@pytest.mark.parametrize("mkldnn", [True, False])
def test_stacked_convolutions_double_backward_agrees_with_vmap(mkldnn: bool) -> None:
    obs, _ = make_victim(ExperimentConfig(dataset="photos", image_size=16, model="test-conv-variety", indices=(3,),
                                          leak_labels=True))
    stacked = stack_model(obs.build_model("cpu"), 3)
    assert sum(isinstance(m, StackedConv2d) for m in stacked.modules()) == 3
    matcher = UpdateMatcher([obs], EngineConfig(objective="cosine", priors={"tv": 0.1}), "cpu")
    xs, ys = _inputs(obs, 1, 3, soft=True)
    with torch.backends.mkldnn.flags(enabled=mkldnn):
        assert _stacks(matcher, xs, ys, True)
        _agree(matcher, xs, ys, True)


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
    assert any(isinstance(m, StackedConv2d) for m in matcher.evaluator._models[1][0].modules())
    assert torch.allclose(fast[0], reference[0], rtol=1e-5, atol=1e-6)
    assert _relative_error(fast[1], reference[1]) < 1e-4
    if soft:
        assert _relative_error(fast[2], reference[2]) < 1e-4
