"""The one client step: every simulated, recorded or federated client update becomes an Observation here."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

from gradleak.attacks.bn_statistics import carried_statistics
from gradleak.data import load_dataset
from gradleak.defenses import build_defense
from gradleak.fl.clients import ClientSetup, client_update
from gradleak.observation import LocalTraining, ModelSpec, shared_buffer_names
from gradleak.victim import batch_gradient, normalize, simulate

SRC = Path(__file__).resolve().parents[1] / "src" / "gradleak"


def test_observations_are_made_in_the_client_step_or_read_from_files_only() -> None:
    """``Observation(`` is written in ``client_step.make_observation`` and in the two readers of files a red team
    brings (a capture, a weights + update pair); every simulator, the text victim, the malicious server, ``record``
    and the federation auditor go through ``make_observation``."""
    makers = sorted(str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
                    if re.search(r"(?<![A-Za-z_])Observation\(", path.read_text()))
    assert makers == ["capture.py", "client_step.py", "tensor_files.py"]


def test_the_flower_dp_client_trains_through_the_client_steps_dp_sgd() -> None:
    """Without noise, a Flower DP client's new weights are the server's plus the weight delta ``simulate`` shares
    for the same batch under FedAvg with the same DP-SGD step (per-example clipping to 0.01 in 3 local steps of 1
    example): one training path. The clip binds: the plain FedAvg delta is far from it."""
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 16})
    setup = ClientSetup("digits", 16, None, spec, num_clients=4, examples_per_round=2, protocol="dp",
                        dp_noise_multiplier=0.0, dp_max_grad_norm=0.01)
    torch.manual_seed(0)
    weights = {k: v.clone() for k, v in spec.build().state_dict().items()}
    new, metrics = client_update(setup, weights, partition_id=1, server_round=1, lr=0.5, local_steps=3, batch_size=1)
    ds = setup.load()
    x, y = ds.batch(setup.batch_indices(1, 1))
    model = spec.build()
    model.load_state_dict(weights)
    kwargs = dict(num_classes=10, mean=ds.mean, std=ds.std, model=model, protocol="fedavg",
                  local_training=LocalTraining(3, 0.5, 1))
    private, _ = simulate(spec, x, y, defense=build_defense("dpsgd", noise_multiplier=0.0, max_grad_norm=0.01),
                          **kwargs)
    plain, _ = simulate(spec, x, y, **kwargs)
    for name, delta in private.update.items():
        torch.testing.assert_close(new[name] - weights[name], delta, atol=1e-7, rtol=1e-5)
    step = torch.cat([d.flatten() for d in private.update.values()]).norm()
    assert step <= 3 * 0.5 * 0.01 * (1 + 1e-4)
    assert torch.cat([d.flatten() for d in plain.update.values()]).norm() > 10 * step
    assert metrics["dp-sample-rate"] == 1.0


def test_a_dp_step_given_its_schedule_carries_its_epsilon(assert_matches_google, tmp_path) -> None:
    """DP-SGD configured with the training schedule its guarantee is for (Poisson batches of 2 of 1000, 100
    steps) puts that epsilon in the Observation's info, which captures and reports keep; without a schedule there
    is no epsilon to state, and none is made up."""
    from gradleak.capture import load_capture, save_capture
    from gradleak.data import load_dataset

    ds = load_dataset("digits", size=16)
    x, y = ds.batch([0, 1])
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 16})
    kwargs = dict(num_classes=10, mean=ds.mean, std=ds.std, seed=0)
    obs, _ = simulate(spec, x, y, defense=build_defense("dpsgd", dataset_size=1000, batch_size=2, steps=100), **kwargs)
    privacy = obs.info["privacy"]
    assert (privacy["sampling"], privacy["sample_rate"], privacy["steps"], privacy["delta"]) == ("poisson", 0.002,
                                                                                                100, 1e-5)
    assert_matches_google(privacy["epsilon"], 1.0, 0.002, 100)
    assert load_capture(save_capture(obs, tmp_path / "dp.safetensors")).info["privacy"] == privacy
    assert "privacy" not in simulate(spec, x, y, defense=build_defense("dpsgd"), **kwargs)[0].info


def _batchnorm_client(protocol: str = "fedsgd", share_buffers: bool | None = True, indices=(3, 25)):
    """A tiny ConvNet whose BatchNorm running statistics have moved (a server model that has trained), one
    client's step on 16x16 photos in train mode; returns the observation, the server's model and the batch."""
    ds = load_dataset("photos", size=16)
    spec = ModelSpec("convnet", {"in_channels": 3, "num_classes": ds.num_classes, "image_size": 16, "width": 4})
    torch.manual_seed(0)
    net = spec.build()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2.0)
    x, y = ds.batch(list(indices))
    local = LocalTraining(3, 0.1, 1) if protocol == "fedavg" else None
    obs, _ = simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std, protocol=protocol,
                      local_training=local, model=copy.deepcopy(net), share_buffers=share_buffers, seed=0)
    return obs, net, normalize(x, ds.mean, ds.std), y


def _true_statistics(net: torch.nn.Module, batches: list[torch.Tensor], step=None) -> list[dict]:
    """Each forward pass's per-channel (mean, unbiased var) at every BatchNorm input, in float64."""
    seen: list[dict] = []
    hooks = [m.register_forward_pre_hook(
        lambda _m, i, name=name: seen[-1].__setitem__(name, (i[0].detach().double().mean((0, 2, 3)),
                                                             i[0].detach().double().var((0, 2, 3)))))
        for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for xb in batches:
        seen.append({})
        step(xb) if step is not None else net(xb)
    for h in hooks:
        h.remove()
    return seen


def test_the_buffer_change_a_client_shares_gives_its_batch_statistics() -> None:
    """A client that sends its state dict hands over ``after - before`` of every BatchNorm running statistic: for
    one forward pass (FedSGD shape) ``old + delta / momentum`` is the batch's own mean and unbiased variance at
    every layer (Yin et al. 2021 match exactly these), and for 3 FedAvg steps the same formula over ``1 - 0.9^3``
    gives the steps' statistics mixed as the running statistics mix them. The default follows the protocol
    (FedAvg clients send their state dict, a FedSGD gradient has no buffers), and gradient matching never sees
    the buffer entries."""
    obs, net, x, y = _batchnorm_client()
    plain, *_ = _batchnorm_client(share_buffers=None)
    assert set(obs.buffer_update) == set(shared_buffer_names(net)) and not plain.buffer_update
    assert set(obs.gradient_estimate()) == set(plain.update) == {n for n, _ in net.named_parameters()}
    assert all(torch.equal(obs.update[k], v) for k, v in plain.update.items())
    carried = carried_statistics(obs)
    assert carried is not None and carried.step_weights == pytest.approx((1.0,))
    (truth,) = _true_statistics(copy.deepcopy(net).train(), [x])
    for name, (mean, var) in truth.items():
        got_mean, got_var = carried.statistics[name]
        assert torch.allclose(got_mean, mean, rtol=1e-4, atol=1e-5) and torch.allclose(got_var, var, rtol=1e-4)

    fedavg, net, x, y = _batchnorm_client("fedavg", share_buffers=None)  # shared by default
    carried = carried_statistics(fedavg)
    assert carried is not None and len(carried.step_weights) == 3
    work = copy.deepcopy(net).train()
    steps = [x[s % 2: s % 2 + 1] for s in range(3)]

    def sgd_step(xb: torch.Tensor, k=iter(range(3))) -> None:
        s = next(k)
        grads = batch_gradient(work, xb, y[s % 2: s % 2 + 1])
        with torch.no_grad():
            for n, p in work.named_parameters():
                p -= 0.1 * grads[n]

    per_step = _true_statistics(work, steps, sgd_step)
    for name, (mean, var) in carried.statistics.items():
        mixed_mean = sum(w * s[name][0] for w, s in zip(carried.step_weights, per_step))
        mixed_var = sum(w * s[name][1] for w, s in zip(carried.step_weights, per_step))
        assert torch.allclose(mean, mixed_mean, rtol=1e-4, atol=1e-5) and torch.allclose(var, mixed_var, rtol=1e-4)
