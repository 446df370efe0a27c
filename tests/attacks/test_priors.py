"""Priors: values on images whose answer is known by construction, and lookup by name and kind."""

from __future__ import annotations

import torch

from gradleak.attacks.priors import PRIORS, BatchNormStatistics, prior_kind


def test_kinds() -> None:
    assert {prior_kind(PRIORS.get(n)) for n in ("tv", "l2")} == {"image"}
    assert prior_kind(PRIORS.get("bn")) == "batchnorm"
    assert prior_kind(PRIORS.get("group")) == "restarts"


def test_total_variation_zero_on_flat_and_larger_on_noise() -> None:
    flat = torch.full((2, 3, 8, 8), 0.3)
    smooth = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(2, 3, 8, 8)
    noise = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    tv = PRIORS.get("tv")
    assert float(tv(flat)) == 0.0
    assert abs(float(tv(smooth)) - 1 / 7) < 1e-6  # horizontal steps of 1/7, no vertical change
    assert float(tv(noise)) > 3 * float(tv(smooth))


def test_batchnorm_prior_zero_at_reference_and_grows_with_shift() -> None:
    ref = {"bn": (torch.zeros(4), torch.ones(4))}
    at_ref = BatchNormStatistics({"bn": (torch.zeros(4), torch.ones(4))}, ref)
    shifted = BatchNormStatistics({"bn": (torch.full((4,), 0.5), torch.ones(4))}, ref)
    bn = PRIORS.get("bn")
    assert float(bn(at_ref)) == 0.0
    assert abs(float(bn(shifted)) - 1.0) < 1e-6  # ||0.5 * ones(4)||_2


def test_group_consistency_pulls_towards_the_mean() -> None:
    same = torch.ones(3, 1, 1, 4, 4)
    assert PRIORS.get("group")(same).abs().max() == 0
    xs = torch.stack([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)]).requires_grad_(True)
    value = PRIORS.get("group")(xs)
    assert torch.allclose(value, torch.full((2,), 0.25))
    (grad,) = torch.autograd.grad(value.sum(), xs)
    assert (grad[0] < 0).all() and (grad[1] > 0).all()  # descent moves each restart to the consensus 0.5


def test_standardized_batchnorm_prior_is_in_the_references_units() -> None:
    """Zero at the reference; a one-standard-deviation shift of every channel's mean (and a variance halved) costs
    the same whatever the layer's width or its activations' scale, where the absolute ``bn`` prior grows with both."""
    prior, absolute = PRIORS.get("bn_standardized"), PRIORS.get("bn")
    assert prior_kind(prior) == "batchnorm"
    values = []
    for width, scale in ((4, 1.0), (64, 30.0)):
        ref = (torch.zeros(width), torch.full((width,), scale**2))
        shifted = (ref[0] + scale, ref[1] / 2)
        assert float(prior(BatchNormStatistics({"l": ref}, {"l": ref}))) < 1e-5
        values.append((float(prior(BatchNormStatistics({"l": shifted}, {"l": ref}))),
                       float(absolute(BatchNormStatistics({"l": shifted}, {"l": ref})))))
    assert abs(values[0][0] - 1.5) < 1e-4 and abs(values[1][0] - 1.5) < 1e-4
    assert values[1][1] > 100 * values[0][1]
