from __future__ import annotations

import dataclasses

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.baselines import ImageGuesses
from gradleak.defenses.secure_aggregation import SecureAggregation
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, make_victim, public_set, run_experiment
from gradleak.metrics import leaked_images, psnr, score_guesses, ssim
from gradleak.observation import ModelSpec
from gradleak.victim import batch_gradient, normalize, simulate


def test_server_sees_the_mean_of_all_clients_updates(digits):
    torch.manual_seed(0)
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 32})
    model = spec.build()
    target_x, target_y = digits.batch([0, 1])
    others_x, others_y = digits.batch([2, 3, 4, 5, 6, 7])  # exactly the 3 other clients' batches
    obs, truth = simulate(spec, target_x, target_y, num_classes=10, mean=digits.mean, std=digits.std, model=model,
                          defense=SecureAggregation(clients=4), population=(others_x, others_y), seed=0)
    expected = None
    for ids in ([0, 1], [2, 3], [4, 5], [6, 7]):  # the sum does not depend on which client drew which pair
        x, y = digits.batch(ids)
        g = batch_gradient(model, normalize(x, digits.mean, digits.std), y)
        expected = g if expected is None else {k: expected[k] + g[k] for k in g}
    for k in expected:
        torch.testing.assert_close(obs.update[k], expected[k] / 4, rtol=1e-4, atol=1e-7)
    assert obs.batch_size == 2 and torch.equal(truth.inputs, target_x)  # the target's batch only
    assert obs.info["defense"]["settings"] == {"clients": 4}


def test_fedavg_clients_aggregate_weight_deltas():
    obs, _ = make_victim(ExperimentConfig(dataset="digits", indices=(0,), protocol="fedavg", local_steps=2,
                                          defense="secure_aggregation", defense_kwargs={"clients": 3}))
    plain, _ = make_victim(ExperimentConfig(dataset="digits", indices=(0,), protocol="fedavg", local_steps=2))
    assert obs.update_kind == "weight_delta"
    assert not torch.allclose(obs.update["classifier.bias"], plain.update["classifier.bias"])


def test_needs_other_clients(digits):
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 32})
    x, y = digits.batch([0])
    with pytest.raises(ConfigError, match="other clients"):
        simulate(spec, x, y, num_classes=10, mean=digits.mean, std=digits.std, defense=SecureAggregation(clients=2))


IMPRINT = {"dataset": "digits", "num_classes": 100, "model": "imprint", "attack": "imprint",
           "model_kwargs": {"base": "lenet", "bins": 128}}


def test_secure_aggregation_does_not_stop_an_attack_that_reads_batches():
    """Positive control first: the malicious server's imprint attack (Fowl et al. 2022) reads a batch of 16 digits
    from one undefended client (most of them leaked beside the best guess, the closest public digit included).
    Then the same 16 images behind secure aggregation, 4 clients of 4 (the server sees only their sum): the same
    share leaks. Secure aggregation does not stop an attack that reads batches; it hides which client sent which
    image, and a batch-1 attack failing on an aggregate shows nothing about it."""
    one = run_experiment(ExperimentConfig(batch_size=16, **IMPRINT)).scores
    summed = run_experiment(ExperimentConfig(batch_size=16, clients=4, **IMPRINT)).scores
    assert one.leaked is not None and summed.leaked is not None
    assert sum(one.leaked) >= 12, one.verdict()  # measured 14/16 (two pairs share a bin)
    assert sum(summed.leaked) == sum(one.leaked), summed.verdict()


def test_secure_aggregation_hides_which_client_not_the_image():
    """One target client (1 image) among 16 behind secure aggregation: imprint asked for the target's one image
    returns some client's image (not leaked: the server cannot tell whose is whose); asked for all 16 it recovers
    the target's image among them (leaked beside the best guess), without knowing it is the target's."""
    config = ExperimentConfig(batch_size=1, defense="secure_aggregation", defense_kwargs={"clients": 16}, **IMPRINT)
    obs, truth = make_victim(config)
    public, _ = public_set(config, obs)
    guesses = ImageGuesses.of(obs.inputs, public)
    attack = ATTACKS.build("imprint")
    baselines = score_guesses(truth.inputs, guesses)

    def leaked(recon: torch.Tensor) -> bool:
        best = int(psnr(recon, truth.inputs.expand_as(recon)).argmax())
        p, s = psnr(recon[best:best + 1], truth.inputs), ssim(recon[best:best + 1], truth.inputs)
        return leaked_images(p.tolist(), s.tolist(), baselines)[0]

    assert not leaked(attack.reconstruct(obs, seed=0).inputs)  # the target's one image: not found
    everyone = attack.reconstruct(dataclasses.replace(obs, batch_size=16), seed=0).inputs
    assert leaked(everyone)  # ... but it is among the 16 the aggregate gives away
