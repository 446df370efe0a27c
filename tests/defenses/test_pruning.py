from __future__ import annotations

import pytest
import torch

from gradleak.defenses import defended_update
from gradleak.defenses.pruning import Pruning
from gradleak.victim import batch_gradient


@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_layer_pruning_zeroes_the_smallest_entries_of_each_tensor(lenet_batch, ratio):
    model, x, y = lenet_batch
    clean = batch_gradient(model, x, y)
    pruned = defended_update(Pruning(ratio=ratio), model, x, y, generator=torch.Generator())
    for k, v in clean.items():
        kept = pruned[k] != 0
        assert (~kept).sum().item() == int(ratio * v.numel())
        assert torch.equal(pruned[k][kept], v[kept])  # survivors unchanged
        if kept.any() and (~kept).any():
            assert v[kept].abs().min() >= v[~kept].abs().max()  # and they are the largest


def test_global_pruning_ranks_over_the_whole_update(lenet_batch):
    model, x, y = lenet_batch
    clean = batch_gradient(model, x, y)
    pruned = defended_update(Pruning(ratio=0.7, scope="global"), model, x, y, generator=torch.Generator())
    flat_clean = torch.cat([v.flatten() for v in clean.values()])
    flat = torch.cat([pruned[k].flatten() for k in clean])
    assert (flat == 0).sum().item() == int(0.7 * flat.numel())
    assert flat_clean[flat != 0].abs().min() >= flat_clean[flat == 0].abs().max()
