"""The leakage risk score: indicators on real updates, the shipped calibrated model, filtering, hostile input."""

from __future__ import annotations

import math

import pytest
import torch

from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.observation import ModelSpec
from gradleak.risk import FEATURES, RiskModel, filter_updates, indicators, risk_score
from gradleak.victim import simulate


def _update(batch: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.nn.Module, int]:
    ds = load_dataset("digits", size=16)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=gen)[:batch].tolist()
    x, y = ds.batch(idx)
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": ds.num_classes, "image_size": 16})
    torch.manual_seed(seed)
    obs, _ = simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std)
    return obs.gradient_estimate(), obs.build_model("cpu"), len(set(y.tolist()))


def test_single_sample_has_rank_one_classifier_gradient_and_one_negative_bias() -> None:
    grads, model, _ = _update(1)
    values = indicators(grads, model, 1)
    assert set(values) == set(FEATURES)
    assert values["negative_bias"] == 1.0
    assert values["classifier_rank"] < 1.3  # one rank-one term, up to float noise
    assert values["log_batch"] == 0.0


def test_batch_rank_grows_with_distinct_labels() -> None:
    grads, model, distinct = _update(8, seed=3)
    values = indicators(grads, model, 8)
    single, _, _ = _update(1)
    assert distinct >= 4
    assert values["classifier_rank"] > indicators(single, model, 1)["classifier_rank"] + 0.3
    assert values["negative_bias"] >= 2
    assert values["log_batch"] == 3.0


def test_delta_sign_is_undone() -> None:
    grads, model, _ = _update(1)
    delta = {k: -0.1 * v for k, v in grads.items()}
    a, b = indicators(grads, model, 1), indicators(delta, model, 1, update_kind="delta")
    assert b["negative_bias"] == a["negative_bias"]
    assert math.isclose(b["first_layer_share"], a["first_layer_share"], rel_tol=1e-6)


def test_shipped_model_ranks_single_sample_above_large_batch() -> None:
    model = RiskModel.load()
    assert model.info.get("fitted_on", 0) >= 10
    single, m, _ = _update(1)
    big, _, _ = _update(32, seed=1)
    assert risk_score(single, m, 1, risk_model=model) > risk_score(big, m, 32, risk_model=model) + 3.0


def test_filter_drops_clips_and_flags() -> None:
    single, m, _ = _update(1)
    big, _, _ = _update(32, seed=1)
    threshold = (risk_score(single, m, 1) + risk_score(big, m, 32)) / 2
    kept, decisions = filter_updates([single, big], m, [1, 32], threshold=threshold)
    assert [d.action for d in decisions] == ["drop", "keep"] and len(kept) == 1
    kept, decisions = filter_updates([single, big], m, [1, 32], threshold=threshold, action="clip", clip_factor=0.5)
    assert [d.action for d in decisions] == ["clip", "keep"]
    name = next(iter(single))
    assert torch.allclose(kept[0][name], 0.5 * single[name])
    _, decisions = filter_updates([single, big], m, [1, 32], threshold=threshold, action="flag")
    assert [d.action for d in decisions] == ["flag", "keep"]


def test_hostile_inputs_are_one_line_errors(tmp_path) -> None:
    grads, model, _ = _update(1)
    bad = dict(grads)
    name = next(iter(bad))
    bad[name] = bad[name].clone()
    bad[name].view(-1)[0] = float("nan")
    with pytest.raises(ConfigError, match=name):
        indicators(bad, model, 1)
    with pytest.raises(ConfigError, match="none of the model's parameters"):
        indicators({"nope": torch.zeros(3)}, model, 1)
    with pytest.raises(ConfigError, match="batch_size"):
        indicators(grads, model, 0)
    path = tmp_path / "risk.json"
    path.write_text('{"coefficients": {"log_batch": 1.0}, "intercept": 0}')
    with pytest.raises(ConfigError, match="lacks coefficients"):
        RiskModel.load(path)
    path.write_text("not json")
    with pytest.raises(ConfigError, match="not a risk model JSON"):
        RiskModel.load(path)
    with pytest.raises(ConfigError, match="action"):
        filter_updates([grads], model, [1], action="explode")  # type: ignore[arg-type]
