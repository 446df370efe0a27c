from __future__ import annotations

import pytest
import torch

from gradleak.defenses import defended_update
from gradleak.defenses.noise import GaussianNoise, LaplacianNoise
from gradleak.victim import batch_gradient


@pytest.mark.parametrize(("defense", "std"), [(GaussianNoise(std=0.05), 0.05), (LaplacianNoise(scale=0.05), 0.05 * 2**0.5)])
def test_noise_has_the_stated_scale_and_is_seeded(lenet_batch, defense, std):
    model, x, y = lenet_batch
    clean = batch_gradient(model, x, y)
    noisy = defended_update(defense, model, x, y, generator=torch.Generator().manual_seed(1))
    again = defended_update(defense, model, x, y, generator=torch.Generator().manual_seed(1))
    diff = torch.cat([(noisy[k] - clean[k]).flatten() for k in clean])
    assert diff.std().item() == pytest.approx(std, rel=0.05)
    assert abs(diff.mean().item()) < 0.01
    assert all(torch.equal(noisy[k], again[k]) for k in clean)


def test_laplacian_is_heavier_tailed_than_gaussian(lenet_batch):
    model, x, y = lenet_batch
    clean = batch_gradient(model, x, y)["classifier.weight"]
    lap = defended_update(LaplacianNoise(scale=1.0), model, x, y, generator=torch.Generator().manual_seed(2))
    d = (lap["classifier.weight"] - clean).flatten()
    kurtosis = ((d - d.mean()) ** 4).mean() / d.var() ** 2
    assert kurtosis.item() == pytest.approx(6.0, rel=0.25)  # Laplace: 6, Gaussian: 3
