"""DP-SGD is Opacus's own computation, bit for bit, and its epsilon is Opacus's accountant."""

from __future__ import annotations

import copy

import pytest
import torch
from opacus import PrivacyEngine
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gradleak.defenses import build_defense
from gradleak.defenses.base import Schedule
from gradleak.defenses.dp import DPSGD, MicrobatchDPSGD
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig, make_victim
from gradleak.models import build_model
from gradleak.observation import ModelSpec
from gradleak.victim import batch_gradient, simulate

pytestmark = pytest.mark.filterwarnings("ignore:Secure RNG turned off", "ignore:Full backward hook is firing")


def opacus_reference(model, x, y, noise_multiplier, max_grad_norm, seed):
    """The gradient a client running Opacus's PrivacyEngine would send: p.grad after DPOptimizer.pre_step()."""
    module = copy.deepcopy(model)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    engine = PrivacyEngine()
    private, dp_optimizer, _ = engine.make_private(
        module=module, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm, poisson_sampling=False, noise_generator=torch.Generator().manual_seed(seed),
    )
    dp_optimizer.zero_grad()
    F.cross_entropy(private(x), y).backward()
    dp_optimizer.pre_step()
    return {n.removeprefix("_module."): p.grad.detach().clone() for n, p in private.named_parameters()}


def test_dp_gradient_is_opacus_bit_for_bit(lenet_batch):
    model, x, y = lenet_batch
    defense = DPSGD(noise_multiplier=0.7, max_grad_norm=0.5)
    ours = defense.step_gradient(model, x, y, generator=torch.Generator().manual_seed(11))
    ref = opacus_reference(model, x, y, 0.7, 0.5, seed=11)
    assert ours.keys() == dict(model.named_parameters()).keys() == ref.keys()
    for name in ref:
        assert torch.equal(ours[name], ref[name]), name
    # the noise is really there: another seed gives another gradient, and so does no noise
    other = defense.step_gradient(model, x, y, generator=torch.Generator().manual_seed(12))
    assert not torch.equal(other["classifier.weight"], ours["classifier.weight"])
    quiet = DPSGD(noise_multiplier=0.0, max_grad_norm=0.5).step_gradient(model, x, y, generator=torch.Generator())
    assert not torch.allclose(quiet["classifier.weight"], ours["classifier.weight"])


def test_victim_shares_the_opacus_gradient(digits):
    """The Observation a DP victim produces holds exactly Opacus's DP gradient for the simulation's seed."""
    torch.manual_seed(3)
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 32})
    model = spec.build()
    inputs, labels = digits.batch([5, 6, 7, 8])
    obs, _ = simulate(spec, inputs, labels, num_classes=10, mean=digits.mean, std=digits.std, model=model,
                      defense=DPSGD(noise_multiplier=1.3, max_grad_norm=1.0), seed=21)
    from gradleak.victim import normalize

    ref = opacus_reference(model, normalize(inputs, digits.mean, digits.std), labels, 1.3, 1.0, seed=21)
    for name in ref:
        assert torch.equal(obs.update[name], ref[name]), name
    assert obs.info["defense"]["name"] == "dpsgd"


def test_epsilon_equals_opacus_privacy_engine():
    """Our epsilon for (dataset size, batch size, epochs, delta) equals what PrivacyEngine reports after
    actually training that schedule."""
    n, batch, epochs, sigma, delta = 240, 24, 3, 1.1, 1e-5
    ours = DPSGD(noise_multiplier=sigma, dataset_size=n, batch_size=batch, epochs=epochs, delta=delta).privacy()
    assert ours is not None and ours.schedule.steps == epochs * n // batch

    torch.manual_seed(0)
    module = torch.nn.Linear(4, 2)
    data = TensorDataset(torch.randn(n, 4), torch.randint(0, 2, (n,)))
    engine = PrivacyEngine(accountant="rdp")
    module, optimizer, loader = engine.make_private(
        module=module, optimizer=torch.optim.SGD(module.parameters(), lr=0.1),
        data_loader=DataLoader(data, batch_size=batch), noise_multiplier=sigma, max_grad_norm=1.0,
    )
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            if len(xb):
                F.cross_entropy(module(xb), yb).backward()
            optimizer.step()
    assert ours.epsilon == engine.get_epsilon(delta)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_equals_opacus_accountant_for_steps(accountant):
    from opacus.accountants import create_accountant

    defense = build_defense("dpsgd", noise_multiplier=0.9, dataset_size=1000, batch_size=50, steps=120,
                            accountant=accountant)
    reference = create_accountant(accountant)
    for _ in range(120):
        reference.step(noise_multiplier=0.9, sample_rate=0.05)
    assert defense.privacy().epsilon == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    # more noise, less epsilon; no noise, no guarantee
    assert build_defense("dpsgd", noise_multiplier=2.0).privacy(Schedule(1000, 50, 120)).epsilon < defense.privacy().epsilon
    assert build_defense("dpsgd", noise_multiplier=0.0).privacy(Schedule(1000, 50, 120)).epsilon == float("inf")


def test_batchnorm_model_gets_an_error_naming_the_fix(digits):
    model = build_model("convnet", in_channels=1, num_classes=10, image_size=32, width=4)
    x, y = digits.batch([0, 1])
    with pytest.raises(ConfigError, match="ModuleValidator.fix"):
        DPSGD().step_gradient(model, x, y, generator=torch.Generator())
    with pytest.raises(ConfigError, match="norm=group"):
        make_victim(ExperimentConfig(dataset="digits", model="convnet", model_kwargs={"width": 4}, indices=(0,),
                                     defense="dpsgd"))
    # the named fix works
    obs, _ = make_victim(ExperimentConfig(dataset="digits", model="convnet", model_kwargs={"width": 4, "norm": "group"},
                                          indices=(0, 1), defense="dpsgd"))
    assert obs.update_kind == "gradient"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"noise_multiplier": -0.1}, "noise_multiplier"), ({"max_grad_norm": 0.0}, "max_grad_norm"),
     ({"delta": 1.5}, "delta"), ({"dataset_size": 100, "steps": 10}, "batch_size"),
     ({"dataset_size": 10, "batch_size": 20, "steps": 1}, "exceeds")],
)
def test_dpsgd_validates_parameters(kwargs, param):
    with pytest.raises(ConfigError, match=param):
        DPSGD(**kwargs)


def test_microbatch_of_one_equals_opacus_per_example_clipping(lenet_batch):
    model, x, y = lenet_batch
    tf_style = MicrobatchDPSGD(microbatch_size=1, noise_multiplier=0.0, l2_norm_clip=0.5)
    ours = tf_style.step_gradient(model, x, y, generator=torch.Generator())
    ref = opacus_reference(model, x, y, 0.0, 0.5, seed=0)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-4, atol=1e-7)


def test_microbatch_clips_each_microbatch_and_adds_calibrated_noise(lenet_batch):
    model, x, y = lenet_batch
    clip = 1e-3  # far below every microbatch's gradient norm: each is scaled to norm `clip`
    quiet = MicrobatchDPSGD(microbatch_size=4, noise_multiplier=0.0, l2_norm_clip=clip)
    got = quiet.step_gradient(model, x, y, generator=torch.Generator())
    expected = {}
    for half in (slice(0, 4), slice(4, 8)):
        g = batch_gradient(model, x[half], y[half])
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        for k, v in g.items():
            expected[k] = expected.get(k, 0) + v * clip / norm / 2
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-9)
    noisy = MicrobatchDPSGD(microbatch_size=4, noise_multiplier=2.0, l2_norm_clip=clip)
    diff = noisy.step_gradient(model, x, y, generator=torch.Generator().manual_seed(0))["classifier.weight"] - got["classifier.weight"]
    # std of the noise on the mean over 2 microbatches: noise_multiplier * clip / 2
    assert diff.std().item() == pytest.approx(2.0 * clip / 2, rel=0.1)
    with pytest.raises(ConfigError, match="multiple of microbatch_size"):
        MicrobatchDPSGD(microbatch_size=3).step_gradient(model, x, y, generator=torch.Generator())
