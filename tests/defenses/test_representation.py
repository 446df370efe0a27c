from __future__ import annotations

import torch

from gradleak.defenses import defended_update
from gradleak.defenses.representation import Soteria, representation_sensitivity
from gradleak.victim import batch_gradient


def test_sensitivity_matches_an_explicit_jacobian(lenet_batch):
    model, x, _ = lenet_batch
    x = x[:2]
    got = representation_sensitivity(model, x, chunk=1)
    some = torch.randperm(got.numel(), generator=torch.Generator().manual_seed(0))[:48]

    def features(img):
        return model.features(img.unsqueeze(0)).flatten()

    expected = torch.zeros_like(got)
    for b in range(len(x)):  # reverse mode, all outputs at once: an independent computation
        xb = x[b].clone().requires_grad_(True)
        r = features(xb)
        for f in some.tolist():
            (jac,) = torch.autograd.grad(r[f], xb, retain_graph=True)
            expected[f] += jac.norm() / r[f].detach().abs()
    torch.testing.assert_close(got[some], expected[some], rtol=1e-4, atol=1e-6)


def test_soteria_prunes_head_columns_only(lenet_batch):
    model, x, y = lenet_batch
    clean = batch_gradient(model, x, y)
    defended = defended_update(Soteria(ratio=0.6), model, x, y, generator=torch.Generator())
    w = defended["classifier.weight"]
    zero_cols = (w == 0).all(dim=0)
    assert zero_cols.sum().item() == int(0.6 * w.shape[1])
    torch.testing.assert_close(w[:, ~zero_cols], clean["classifier.weight"][:, ~zero_cols])
    assert all(torch.equal(defended[k], clean[k]) for k in clean if k != "classifier.weight")
    # the pruned columns are the least sensitive representation elements
    score = representation_sensitivity(model, x)
    assert score[zero_cols].max() <= score[~zero_cols].min()
