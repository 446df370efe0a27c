import torch

from gradleak.split import distance_correlation, equalise_and_noise


def test_distance_correlation_of_dependent_and_independent_batches():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=gen)
    assert abs(float(distance_correlation(x, 3 * x + 1)) - 1.0) < 1e-4
    small = torch.rand(256, 2, generator=gen)
    assert float(distance_correlation(small, torch.rand(256, 2, generator=gen))) < 0.3  # independent
    assert float(distance_correlation(small, small.pow(2) + 0.05 * torch.rand(256, 2, generator=gen))) > 0.9


def test_equalised_gradients_have_one_norm_without_noise():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(10, 4, 3, 3, generator=gen) * torch.arange(1, 11).view(10, 1, 1, 1)
    out = equalise_and_noise(g, 0.0, gen).flatten(1).norm(dim=1)
    torch.testing.assert_close(out, torch.full((10,), float(g.flatten(1).norm(dim=1).mean())))
