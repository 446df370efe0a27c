"""The one client step: every simulated, recorded or federated client update becomes an Observation here."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from gradleak.defenses import build_defense
from gradleak.fl.clients import ClientSetup, client_update
from gradleak.observation import LocalTraining, ModelSpec
from gradleak.victim import simulate

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
