"""The closed-form part-wise distances agree with autograd through the flat ones they replace."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks.objectives import CLOSED_FORMS, OBJECTIVES


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
@pytest.mark.parametrize("weighted", [False, True])
def test_closed_form_matches_autograd_of_the_flat_distance(name: str, weighted: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    sizes = (7, 30, 3)
    parts = [torch.randn(4, n, generator=gen, dtype=torch.float64) for n in sizes]
    targets = [torch.randn(n, generator=gen, dtype=torch.float64) for n in sizes]  # broadcast to the 4 copies
    weights = [0.5, 2.0, 1.0] if weighted else None
    value, grads = CLOSED_FORMS[name]([p.clone() for p in parts], targets, weights)

    flat = torch.cat(parts, dim=1).requires_grad_(True)
    entry = None if weights is None else torch.cat([torch.full((n,), w, dtype=torch.float64)
                                                    for n, w in zip(sizes, weights)])
    expected = OBJECTIVES.get(name)(flat, torch.cat(targets), entry)
    (expected_grad,) = torch.autograd.grad(expected.sum(), flat)
    torch.testing.assert_close(value, expected.detach())
    torch.testing.assert_close(torch.cat(grads, dim=1), expected_grad)


@pytest.mark.numerics  # the same arithmetic into other buffers: exact
@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_closed_form_into_buffers_is_bit_for_bit_the_same(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    parts = [torch.randn(2, n, generator=gen) for n in (5, 1000)]
    targets = [torch.randn(n, generator=gen) for n in (5, 1000)]
    value, grads = CLOSED_FORMS[name]([p.clone() for p in parts], targets, None)
    buffers = [torch.full_like(p, float("nan")) for p in parts]
    value_b, grads_b = CLOSED_FORMS[name]([p.clone() for p in parts], targets, None, buffers)
    assert torch.equal(value, value_b)
    assert all(torch.equal(a, b) and b.data_ptr() == o.data_ptr() for a, b, o in zip(grads, grads_b, buffers))
