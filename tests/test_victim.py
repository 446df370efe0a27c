from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from gradleak.observation import LocalTraining, ModelSpec
from gradleak.victim import normalize, simulate


def _batch(faces, n: int = 4):
    return faces.batch(list(range(0, 10 * n, 10)))


def test_fedsgd_shares_the_mean_cross_entropy_gradient(faces) -> None:
    x, y = _batch(faces)
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 100})
    obs, truth = simulate(spec, x, y, num_classes=100, mean=faces.mean, std=faces.std, seed=3)
    model = obs.build_model()
    # Independent computation: sum of per-sample gradients divided by the batch size.
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(4):
        model.zero_grad()
        F.cross_entropy(model(normalize(x[i : i + 1], faces.mean, faces.std)), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            acc[n] += p.grad / 4
    for n in acc:
        assert torch.allclose(obs.update[n], acc[n], atol=1e-6), n
    assert obs.labels is None and obs.batch_size == 4
    assert torch.equal(truth.inputs, x) and torch.equal(truth.labels, y)


def test_fedavg_shares_the_delta_of_k_local_steps(faces) -> None:
    x, y = _batch(faces)
    spec = ModelSpec("mlp", {"in_channels": 1, "num_classes": 2, "hidden": (16,)})
    local = LocalTraining(steps=3, lr=0.5, batch_size=2)
    obs, _ = simulate(spec, x, y, num_classes=2, mean=faces.mean, std=faces.std, protocol="fedavg",
                      local_training=local, seed=0)
    model = obs.build_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    xn = normalize(x, faces.mean, faces.std)
    for step, idx in enumerate([[0, 1], [2, 3], [0, 1]]):
        opt.zero_grad()
        F.cross_entropy(model(xn[idx]), y[idx]).backward()
        opt.step()
    for n, p in model.named_parameters():
        assert torch.allclose(obs.update[n], p.detach() - obs.weights[n], atol=1e-6), n
    assert obs.update_kind == "weight_delta" and obs.local_training == local


def test_leaked_labels_and_seeded_init(faces) -> None:
    x, y = _batch(faces, 2)
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 100})
    a, _ = simulate(spec, x, y, num_classes=100, mean=faces.mean, std=faces.std, seed=5, leak_labels=True)
    b, _ = simulate(spec, x, y, num_classes=100, mean=faces.mean, std=faces.std, seed=5)
    c, _ = simulate(spec, x, y, num_classes=100, mean=faces.mean, std=faces.std, seed=6)
    assert torch.equal(a.labels, y)
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    assert not torch.equal(a.weights["classifier.weight"], c.weights["classifier.weight"])


def test_dp_sgd_runs_on_token_inputs_and_other_step_defenses_are_refused_not_ignored() -> None:
    """The client step runs Opacus DP-SGD on a language model too (each record's gradient clipped): with no noise
    and a clip of 1e-3 the shared gradient's norm is at most 1e-3, where the plain gradient's is far larger. A step
    defense written for image classification only (microbatch clipping) is refused rather than replaced by the
    plain gradient under its name."""
    pytest.importorskip("transformers")
    from transformers import GPT2Config, GPT2LMHeadModel

    from gradleak.defenses import build_defense
    from gradleak.errors import ConfigError
    from gradleak.inputs import TokenInput
    from gradleak.training_task import Task

    torch.manual_seed(0)
    net = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    spec = ModelSpec.huggingface(net.config, "causal_lm")
    kwargs = dict(input_spec=TokenInput(8, 64, None), task=Task.causal_lm(), model=net, seed=0)
    plain, _ = simulate(spec, ids, None, **kwargs)
    private, _ = simulate(spec, ids, None, **kwargs,
                          defense=build_defense("dpsgd", noise_multiplier=0.0, max_grad_norm=1e-3))

    def norm(update: dict[str, torch.Tensor]) -> float:
        return float(torch.cat([g.flatten() for g in update.values()]).norm())

    assert set(private.update) == set(plain.update)
    assert norm(private.update) <= 1e-3 * (1 + 1e-4) and norm(plain.update) > 0.1
    assert private.info["defense"]["name"] == "dpsgd"
    with pytest.raises(ConfigError, match="changes the training step"):
        simulate(spec, ids, None, **kwargs, defense=build_defense("microbatch_dpsgd"))
