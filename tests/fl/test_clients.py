"""Simulated clients: what a FedSGD client sends is a gradient step, and a DP client's is clipped and noised."""

from __future__ import annotations

import pytest
import torch

from gradleak.fl.clients import ClientSetup, client_update
from gradleak.observation import ModelSpec
from gradleak.victim import batch_gradient, normalize


def _setup(protocol: str, **kw) -> ClientSetup:
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 16})
    return ClientSetup("digits", 16, None, spec, num_clients=4, examples_per_round=2, protocol=protocol, **kw)


def test_partitions_are_disjoint_and_cover_the_dataset():
    setup = _setup("fedsgd")
    shards = [set(setup.partition(p)) for p in range(4)]
    assert sum(len(s) for s in shards) == len(setup.load())
    assert all(not (a & b) for i, a in enumerate(shards) for b in shards[i + 1 :])
    assert setup.batch_indices(1, 1) != setup.batch_indices(1, 2)


def test_fedsgd_update_is_minus_lr_times_the_batch_gradient():
    setup = _setup("fedsgd")
    torch.manual_seed(0)
    model = setup.model_spec.build()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    new, metrics = client_update(setup, weights, partition_id=2, server_round=1, lr=0.5)
    ds = setup.load()
    x, y = ds.batch(setup.batch_indices(2, 1))
    grad = batch_gradient(model, normalize(x, ds.mean, ds.std), y)
    for name, g in grad.items():
        torch.testing.assert_close((new[name] - weights[name]) / -0.5, g, atol=2e-6, rtol=1e-4)
    assert metrics["num-examples"] == 2 and metrics["partition-id"] == 2


def test_dp_client_clips_per_sample_and_adds_noise():
    pytest.importorskip("opacus")
    torch.manual_seed(0)
    weights = _setup("dp").model_spec.build().state_dict()
    # No noise: the step is lr times the mean of per-sample gradients clipped to norm C, so its norm is <= C.
    quiet = _setup("dp", dp_noise_multiplier=0.0, dp_max_grad_norm=0.01)
    new, metrics = client_update(quiet, weights, 0, 1, lr=1.0)
    step = torch.cat([(new[k] - weights[k]).flatten() for k in weights])
    assert 0 < step.norm() <= 0.01 + 1e-6
    assert metrics["dp-epsilon"] == float("inf")
    # With noise, two seeds give different updates and a finite epsilon.
    noisy = _setup("dp", dp_noise_multiplier=1.0, dp_max_grad_norm=0.01)
    a, m = client_update(noisy, weights, 0, 1, lr=1.0)
    b, _ = client_update(_setup("dp", dp_noise_multiplier=1.0, dp_max_grad_norm=0.01, seed=1), weights, 0, 1, lr=1.0)
    assert 0 < m["dp-epsilon"] < 100
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_the_readme_fl_audit_dp_epsilon_beside_googles_accountant(assert_matches_google):
    """The README's ``gradleak fl-audit examples/fl_audit.toml --protocol dp`` figure, recomputed on the very
    schedule its clients run: 4 clients, 2 rounds, 1 new example of the shard a round in 1 step (fixed slices, no
    amplification by sampling), noise multiplier 1, delta 1e-5. Every client's reported epsilon after round 1 and
    after round 2 is Google's ``dp-accounting`` figure for one Gaussian step at sigma 1 (4.73)."""
    from pathlib import Path

    from gradleak.fl.simulation import load_audit_config

    config, _ = load_audit_config(Path(__file__).resolve().parents[2] / "examples" / "fl_audit.toml")
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": config.num_classes, "image_size": config.image_size})
    setup = ClientSetup(config.dataset, config.image_size, None, spec, num_clients=config.num_clients,
                        examples_per_round=config.examples_per_round, protocol="dp", seed=config.seed,
                        dp_noise_multiplier=config.dp_noise_multiplier, dp_max_grad_norm=config.dp_max_grad_norm)
    torch.manual_seed(0)
    weights = spec.build().state_dict()
    epsilons = []
    for server_round in range(1, config.rounds + 1):
        for pid in range(config.num_clients):
            _, metrics = client_update(setup, weights, pid, server_round, config.local_lr, config.local_steps,
                                       config.examples_per_round)
            epsilons.append(metrics["dp-epsilon"])
            # stated in the reply: fixed batches, no amplification (rate 1), one use of each example
            assert (metrics["dp-delta"], metrics["dp-sample-rate"], metrics["dp-accounted-steps"]) == (1e-5, 1.0, 1)
    assert len(epsilons) == 8 and max(epsilons) - min(epsilons) < 1e-9
    assert epsilons[0] == pytest.approx(4.7285, abs=1e-3)
    assert_matches_google(epsilons[0], config.dp_noise_multiplier, 1.0, 1)
