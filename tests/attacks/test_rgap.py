"""R-GAP (Zhu & Blaschko 2021) on CNN6 with a real bundled photo, and its rank condition."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.attacks import ATTACKS
from gradleak.attacks.rgap import solve_conv
from gradleak.data import load_dataset
from gradleak.errors import ConfigError
from gradleak.metrics import score
from gradleak.observation import ModelSpec
from gradleak.victim import simulate

pytestmark = pytest.mark.numerics  # rank/span decisions, exact recovery: .ci/run runs these on two CPU paths


def _observe(indices: list[int], model: str = "cnn6", dataset: str = "photos"):
    ds = load_dataset(dataset)
    x, y = ds.batch(indices)
    spec = ModelSpec(model, {"in_channels": ds.input_shape[0], "num_classes": ds.num_classes, "image_size": 32})
    torch.manual_seed(0)
    return simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std)


def test_cnn6_photo_recovered_above_40db_past_every_guess(assert_leaks) -> None:
    obs, truth = _observe([42])
    recon = ATTACKS.build("rgap").reconstruct(obs)
    photos = load_dataset("photos")
    scores = assert_leaks(recon.inputs, recon.labels, truth, obs, photos.images[photos.disjoint_from([42])])
    assert scores.psnr[0] >= 40.0
    assert scores.label_correct == [True]
    layers = recon.details["layers"]
    assert len(layers) == 6 and recon.details["solvable"]
    assert all(layer["rank"] == layer["unknowns"] for layer in layers)


def test_rank_condition_reports_underdetermined_layer() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 1, 3, stride=2, padding=1, bias=False).double()  # 16 + 27 equations, 192 unknowns
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    out = conv(x[None])[0].detach()
    delta = torch.randn_like(out)
    (w_grad,) = torch.autograd.grad(conv(x[None]), conv.weight, delta[None])
    _, report = solve_conv(conv, (3, 8, 8), out, delta, w_grad)
    assert report["unknowns"] == 192
    assert report["rank"] <= report["forward_equations"] + report["gradient_rank"] < 192
    assert not report["solvable"]
    assert report["forward_residual"] < 1e-8  # the minimum-norm solution still satisfies what is known


def test_clear_errors() -> None:
    obs, _ = _observe([0, 1], dataset="digits")
    with pytest.raises(ConfigError, match="batch size 2"):
        ATTACKS.build("rgap").reconstruct(obs)
    obs, _ = _observe([0], model="lenet", dataset="digits")
    with pytest.raises(ConfigError, match="R-GAP needs"):
        ATTACKS.build("rgap").reconstruct(obs)
