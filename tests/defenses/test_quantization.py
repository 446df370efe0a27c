from __future__ import annotations

import torch

from gradleak.defenses import defended_update
from gradleak.defenses.quantization import Quantization
from gradleak.victim import batch_gradient


def test_fp16_int8_and_sign(lenet_batch):
    model, x, y = lenet_batch
    clean = batch_gradient(model, x, y)
    gen = torch.Generator()
    half = defended_update(Quantization(kind="fp16"), model, x, y, generator=gen)
    int8 = defended_update(Quantization(kind="int8"), model, x, y, generator=gen)
    sign = defended_update(Quantization(kind="sign"), model, x, y, generator=gen)
    for k, v in clean.items():
        assert half[k].dtype == torch.float32
        # fp16 keeps 11 significant bits (normal range); tiny entries flush to subnormals/zero
        normal = v.abs() > 6.1e-5
        assert ((half[k] - v).abs()[normal] <= v.abs()[normal] * 2**-11).all()
        assert int8[k].unique().numel() <= 255
        assert (int8[k] - v).abs().max() <= v.abs().max() / 127 / 2 * (1 + 1e-5)
        assert set(sign[k].abs().unique().tolist()) <= {0.0, v.abs().mean().item()}
        assert torch.equal(torch.sign(sign[k]), torch.sign(v))
    assert any(not torch.equal(half[k], clean[k]) for k in clean)
