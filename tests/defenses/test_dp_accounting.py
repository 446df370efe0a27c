"""Every epsilon gradleak reports, checked against Google's ``dp-accounting`` for the batches that actually ran.

Opacus's RDP accountant (what gradleak calls) and Google's RDP accountant are separate implementations of the
same bound (Mironov 2017; Mironov et al. 2019 for the sampled Gaussian); their order grids differ, so they agree
to about 1 % (measured: 4.7285 vs 4.7285 for one Gaussian step at sigma 1; 27.99 vs 28.27 at sigma 0.5,
q 0.05, 200 steps, where Google's drops five low orders that do not converge). Google's PLD accountant is tighter
than any RDP bound, so it is also a floor each reported epsilon must not fall under.
"""

from __future__ import annotations

import math

import pytest
import torch

from gradleak.defenses import build_defense
from gradleak.defenses.base import Schedule, draw_batches
from gradleak.fl.clients import ClientSetup, client_update
from gradleak.model_spec import ModelSpec
from gradleak.utility import UtilityConfig, measure_utility

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing", "ignore:Optimal order")


def test_utility_epsilon_is_for_the_poisson_batches_training_drew(assert_matches_google):
    """``gradleak defend`` and ``tradeoff`` print ``measure_utility``'s epsilon: DP-SGD trains on Poisson batches
    of expected size 32 of the training split, so the accountant's rate is 32 / train size, for every step."""
    config = UtilityConfig(dataset="digits", steps=20, batch_size=32)
    result = measure_utility(build_defense("dpsgd", noise_multiplier=1.0), config, baseline_accuracy=0.0)
    assert result.privacy.schedule == Schedule(result.train_size, 32, 20)
    assert result.train_size == round(1797 * (1 - config.test_fraction)) == 1348
    assert_matches_google(result.epsilon, 1.0, 32 / result.train_size, 20)


def test_fixed_size_draws_are_accounted_without_amplification(assert_matches_google):
    """A DP defense whose trainer draws fixed-size batches (TF-Privacy-style microbatches) gets no credit for
    sampling: its epsilon is that of the most-used example's steps, each a plain Gaussian mechanism."""
    config = UtilityConfig(dataset="digits", steps=12, batch_size=16)
    defense = build_defense("microbatch_dpsgd", microbatch_size=4, noise_multiplier=2.0)
    result = measure_utility(defense, config, baseline_accuracy=0.0)
    schedule = result.privacy.schedule
    assert not schedule.poisson and schedule.sample_rate == 1.0
    # 12 draws of 16 from 1348 with replacement: some example is drawn at least once, none in more steps than ran
    assert 1 <= schedule.uses <= 12
    assert_matches_google(result.epsilon, 2.0, 1.0, schedule.uses)
    # the same noise with amplification would have claimed far less: the two must not be confused
    amplified = build_defense("microbatch_dpsgd", microbatch_size=4, noise_multiplier=2.0).privacy(
        Schedule(schedule.dataset_size, 16, 12))
    assert amplified.epsilon < result.epsilon / 3


def _dp_setup(**kw) -> ClientSetup:
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 16})
    return ClientSetup("digits", 16, None, spec, num_clients=4, examples_per_round=2, protocol="dp",
                       dp_noise_multiplier=1.0, dp_max_grad_norm=1.0, **kw)


def test_flower_dp_client_epsilon_counts_each_use_of_an_example_without_amplification(assert_matches_google):
    """A DP client trains on fixed slices of its shard (this round's 2 examples), so one round of one step is one
    Gaussian mechanism on each example: epsilon about 4.73 at sigma 1, delta 1e-5 (the README once printed 0.68,
    accounted as if the batch had been Poisson-sampled from the whole shard)."""
    setup = _dp_setup()
    torch.manual_seed(0)
    weights = setup.model_spec.build().state_dict()
    _, one_step = client_update(setup, weights, partition_id=0, server_round=1, lr=0.1, local_steps=1, batch_size=2)
    assert one_step["dp-epsilon"] == pytest.approx(4.7285, abs=1e-3)
    assert_matches_google(one_step["dp-epsilon"], 1.0, 1.0, 1)
    # 3 local steps of 1 example over the round's 2 examples: slices [0], [1], [0]: the first is used twice
    _, three_steps = client_update(setup, weights, partition_id=0, server_round=1, lr=0.1, local_steps=3,
                                   batch_size=1)
    assert_matches_google(three_steps["dp-epsilon"], 1.0, 1.0, 2)
    # round 2 trains on the next 2 examples of the shard: no example has been used twice yet
    _, second_round = client_update(setup, weights, partition_id=0, server_round=2, lr=0.1, local_steps=1,
                                    batch_size=2)
    assert second_round["dp-epsilon"] == pytest.approx(one_step["dp-epsilon"], rel=1e-9)


def test_flower_dp_client_refuses_batchnorm_instead_of_changing_the_model():
    spec = ModelSpec("convnet", {"in_channels": 1, "num_classes": 10, "image_size": 32, "width": 4})
    setup = ClientSetup("digits", 32, None, spec, num_clients=4, examples_per_round=2, protocol="dp")
    from gradleak.errors import ConfigError

    with pytest.raises(ConfigError, match="Flower DP client.*norm=group"):
        client_update(setup, spec.build().state_dict(), partition_id=0, server_round=1, lr=0.1)


def test_draw_batches_poisson_rate_and_fixed_uses():
    gen = torch.Generator().manual_seed(0)
    batches, schedule = draw_batches(1000, 50, 400, poisson=True, generator=gen)
    sizes = torch.tensor([len(b) for b in batches], dtype=torch.float64)
    assert schedule == Schedule(1000, 50, 400)
    # Binomial(1000, 0.05): mean 50, std 6.9; over 400 steps the mean lies within 50 +- 3 * 6.9 / 20
    assert abs(float(sizes.mean()) - 50) < 1.1 and 3 < float(sizes.std()) < 11
    batches, schedule = draw_batches(10, 4, 30, poisson=False, generator=gen)
    counts = torch.zeros(10)
    for b in batches:
        counts[torch.unique(b)] += 1
    assert schedule.uses == int(counts.max()) and schedule.steps == 30 and not schedule.poisson
    with pytest.raises(Exception, match="uses"):
        Schedule(10, 4, 30, poisson=False)
    assert math.isinf(build_defense("dpsgd", noise_multiplier=0.0).privacy(schedule).epsilon)
