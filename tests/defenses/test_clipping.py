from __future__ import annotations

import pytest
import torch

from gradleak.defenses import defended_update
from gradleak.defenses.clipping import GradientClipping
from gradleak.victim import batch_gradient


def test_clipping_scales_to_the_global_norm_and_keeps_direction(lenet_batch):
    model, x, y = lenet_batch
    clean = batch_gradient(model, x, y)
    norm = torch.sqrt(sum(v.pow(2).sum() for v in clean.values())).item()
    clipped = defended_update(GradientClipping(max_norm=norm / 4), model, x, y, generator=torch.Generator())
    assert torch.sqrt(sum(v.pow(2).sum() for v in clipped.values())).item() == pytest.approx(norm / 4, rel=1e-5)
    for k in clean:
        torch.testing.assert_close(clipped[k], clean[k] / 4)
    loose = defended_update(GradientClipping(max_norm=norm * 2), model, x, y, generator=torch.Generator())
    assert all(torch.equal(loose[k], clean[k]) for k in clean)
