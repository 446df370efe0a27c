"""The registry, the shared client path, and parameter validation with clear errors."""

from __future__ import annotations

import pytest
import torch

from gradleak.defenses import DEFENSES, build_defense, defended_update
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig
from gradleak.victim import batch_gradient


def test_every_family_is_registered():
    assert set(DEFENSES.names()) >= {
        "dpsgd", "microbatch_dpsgd", "clipping", "gaussian", "laplacian", "pruning", "quantization",
        "secure_aggregation", "label_hiding", "soteria",
    }
    assert build_defense(None) is None and build_defense("none") is None


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("gaussian", {"std": -1e-3}, "std must lie in"),
        ("laplacian", {"scale": -1.0}, "scale must lie in"),
        ("pruning", {"ratio": 1.0}, "ratio must lie in \\[0.0, 1.0\\)"),
        ("pruning", {"ratio": -0.1}, "ratio"),
        ("pruning", {"scope": "model"}, "scope"),
        ("clipping", {"max_norm": 0}, "max_norm"),
        ("quantization", {"kind": "int4"}, "kind must be one of"),
        ("secure_aggregation", {"clients": 0}, "clients"),
        ("label_hiding", {"mode": "drop"}, "mode"),
        ("soteria", {"ratio": 1.2}, "ratio"),
        ("gaussian", {"sigma": 1.0}, "rejected its settings"),
        ("gausian", {}, "unknown defense 'gausian'"),
    ],
)
def test_bad_parameters_raise_clear_errors(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_defense(name, **kwargs)


def test_experiment_config_validates_the_defense_early():
    with pytest.raises(ConfigError, match="std"):
        ExperimentConfig(defense="gaussian", defense_kwargs={"std": -1.0})
    config = ExperimentConfig(defense="pruning", defense_kwargs={"ratio": 0.3})
    assert config.to_dict()["defense"] == "pruning" and config.build_defense().ratio == 0.3


def test_undefended_path_is_the_plain_gradient(lenet_batch):
    model, x, y = lenet_batch
    got = defended_update(None, model, x, y, generator=torch.Generator())
    ref = batch_gradient(model, x, y)
    assert all(torch.equal(got[k], ref[k]) for k in ref)
