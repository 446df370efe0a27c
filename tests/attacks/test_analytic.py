"""Linear-layer recovery (Phong et al. 2017; Geiping et al. 2020) on real bundled images."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, run_experiment
from gradleak.observation import ModelSpec
from gradleak.victim import simulate


def _observe(dataset: str, indices: list[int], model: str = "mlp", **model_kwargs):
    ds = load_dataset(dataset)
    x, y = ds.batch(indices)
    c, h, _ = ds.input_shape
    spec = ModelSpec(model, {"in_channels": c, "num_classes": ds.num_classes, "image_size": h, **model_kwargs})
    torch.manual_seed(0)
    return simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std)


@pytest.mark.parametrize("dataset,index", [("digits", 3), ("faces", 17)])
def test_single_sample_is_exact_to_float_precision(dataset: str, index: int, assert_leaks) -> None:
    obs, truth = _observe(dataset, [index])
    recon = ATTACKS.build("linear").reconstruct(obs)
    ds = load_dataset(dataset)
    assert_leaks(recon.inputs, recon.labels, truth, obs, ds.images[ds.disjoint_from([index])])
    assert recon.inputs.shape == truth.inputs.shape
    assert (recon.inputs - truth.inputs).abs().max() < 1e-4
    assert recon.details["recovered"] == [True]


def test_batch_recovers_only_certified_samples_exactly() -> None:
    obs, truth = _observe("faces", list(range(8)))
    recon = ATTACKS.build("linear").reconstruct(obs)
    recovered = recon.details["recovered"]
    assert recon.inputs.shape == truth.inputs.shape
    assert sum(recovered) >= 2  # samples that own a hidden unit of the first layer
    assert recon.details["not_separated"] == 8 - sum(recovered)
    for slot, ok in enumerate(recovered):
        err = (recon.inputs[slot][None] - truth.inputs).flatten(1).abs().max(1).values.min()
        if ok:  # every slot claimed as recovered is one of the true images, to float precision
            assert err < 1e-4
        else:  # the rest are the mean-colour filler, not a guess
            image = recon.inputs[slot]
            assert torch.allclose(image, image.mean((1, 2), keepdim=True).expand_as(image))


def test_classifier_input_layer_uses_label_rows_as_approximations() -> None:
    obs, truth = _observe("digits", [0, 1, 2], hidden=())  # a linear model: its one layer is the classifier
    recon = ATTACKS.build("linear").reconstruct(obs)
    assert recon.details["recovered"] == [False, False, False]
    assert recon.details["method"].count("label row (approximate)") == 3
    assert sorted(recon.details["label_rows"][:3]) == sorted(truth.labels.tolist())


def test_experiment_by_name_leaks_past_every_guess() -> None:
    config = ExperimentConfig(dataset="digits", indices=(5,), model="mlp", attack="linear")
    result = run_experiment(config)  # scored beside mid-gray, the mean image and the closest public digit
    assert result.scores.means()["psnr"] > 80
    assert result.scores.leaked == [True]


def test_clear_errors() -> None:
    obs, _ = _observe("digits", [0], model="lenet")
    with pytest.raises(ConfigError, match="no nn.Linear"):
        ATTACKS.build("linear").reconstruct(obs)
    obs, _ = _observe("digits", [0])
    withheld = obs.with_update({k: v for k, v in obs.update.items() if k != "net.1.bias"})
    with pytest.raises(ConfigError, match="withholds 'net.1.bias'"):
        ATTACKS.build("linear").reconstruct(withheld)
