"""Inverting Gradients (Geiping et al. 2020): paper defaults, and a reconstruction that beats every guess."""

from __future__ import annotations

import pytest

from gradleak.attacks import ATTACKS
from gradleak.attacks.inverting import CARRIED_BN_WEIGHT, InvertingGradients
from gradleak.attacks.optimization import EngineConfig, UnrolledMatcher, UpdateMatcher
from gradleak.data import load_dataset
from gradleak.experiment import ExperimentConfig, make_victim, public_set
from gradleak.observation import LocalTraining, ModelSpec
from gradleak.victim import simulate


def test_paper_defaults_and_lookup() -> None:
    attack = ATTACKS.build("inverting")
    assert isinstance(attack, InvertingGradients)
    engine = attack.engine()
    assert (engine.objective, engine.optimizer, engine.signed_gradients, engine.box) == ("cosine", "adam", True, True)
    assert engine.schedule == "step" and engine.lr == 0.1 and engine.priors["tv"] > 0


@pytest.mark.parametrize("photo", [3, 25])
def test_leaks_a_photo_past_every_guess_on_lenet(photo, assert_leaks) -> None:
    """Inverting Gradients (cosine + TV, signed Adam, 2000 steps) on DLG's LeNet, batch 1, a 32x32 photo: the
    reconstruction beats mid-gray, the mean image and the closest crop of another photo by 3 dB and 0.1 SSIM.
    Measured: photo 3: 17.24 dB / SSIM 0.68 against 12.88 / 0.31; photo 25: 19.65 / 0.62 against 11.77 / 0.25.
    (At 300 steps on a random ConvNet the attack stays under mid-gray, 10.9 against 11.7 dB: the old test here
    only asked to beat uniform noise.)"""
    config = ExperimentConfig(dataset="photos", model="lenet", indices=(photo,), leak_labels=True)
    obs, truth = make_victim(config)
    recon = ATTACKS.build("inverting", iterations=2000, tv=0.05).reconstruct(obs, seed=0)
    public, _ = public_set(config, obs)
    assert_leaks(recon.inputs, recon.labels, truth, obs, public)
    assert float(recon.trace[-1].min()) < 0.7 * float(recon.trace[0].min())


def test_reachable_from_config_and_cli_with_trace_plot_and_checkpoint(tmp_path) -> None:
    from gradleak.cli import main
    from gradleak.experiment import run_experiment

    config = ExperimentConfig(dataset="photos", image_size=16, indices=(3,), attack="inverting",
                              attack_kwargs={"iterations": 5, "tv": 0.01})
    result = run_experiment(config, out=tmp_path / "config")
    assert result.reconstruction.trace.shape == (5, 1)
    assert (tmp_path / "config" / "trace.png").stat().st_size > 0
    ckpt = tmp_path / "ig.ckpt"
    args = ["demo", "--dataset", "photos", "--image-size", "16", "--attack", "inverting", "--iterations", "4",
            "--checkpoint", str(ckpt), "--quiet", "--out", str(tmp_path / "cli")]
    assert main(args) == 0
    assert ckpt.exists() and (tmp_path / "cli" / "trace.png").exists()
    assert main(args) == 0  # resumes from the finished checkpoint


def _client_sharing_buffers(protocol: str = "fedsgd", indices=(3,)):
    """One client of a tiny ConvNet (BatchNorm on batch statistics) that sends its state dict: its update carries
    the change of its BatchNorm running statistics. Returns the observation, its truth in the model's space."""
    ds = load_dataset("photos", size=16)
    spec = ModelSpec("convnet", {"in_channels": 3, "num_classes": ds.num_classes, "image_size": 16, "width": 4})
    x, y = ds.batch(list(indices))
    local = LocalTraining(3, 0.1, 1) if protocol == "fedavg" else None
    obs, truth = simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std, protocol=protocol,
                          local_training=local, leak_labels=True, share_buffers=True, seed=0)
    return obs, obs.inputs.to_model(truth.inputs)


def test_carried_batch_statistics_rank_the_truth_above_its_contrast_copies() -> None:
    """Issue 25's cause and its fix, on the attacker's own objective. With BatchNorm on batch statistics at batch
    1 the update is the same for the image at any contrast while TV shrinks with it, so the published objective
    (cosine + TV) prefers the truth at half contrast to the truth; with the client's batch statistics read off
    the buffer change its update carries, the BN prior (on by default in Inverting Gradients then) is zero at
    the truth and pins every layer's mean and variance, so the truth wins. For FedAvg the unrolled simulation
    mixes its steps' statistics as the running statistics mix them, and matches the observed change at the
    truth. (An end-to-end leak on a tiny model is not claimed: on this 16x16 ConvNet of width 8, 300 iterations
    leak neither with nor without the statistics; benchmarks/bench_realistic.py measures the trained models.)"""
    obs, x = _client_sharing_buffers()
    y = obs.labels.view(1, 1, -1)
    published, carried = (UpdateMatcher([obs], InvertingGradients(bn=bn).engine(obs), "cpu") for bn in (0.0, None))
    assert InvertingGradients().engine(obs).priors["bn_standardized"] == CARRIED_BN_WEIGHT > 0
    value = {(name, a): float(m.values(a * x[None, None], y, False))
             for name, m in (("published", published), ("carried", carried)) for a in (1.0, 0.5)}
    assert value["published", 0.5] < value["published", 1.0]
    assert value["carried", 1.0] < value["carried", 0.5]
    assert value["carried", 1.0] == pytest.approx(value["published", 1.0], rel=1e-3)  # BN prior ~0 at the truth

    fedavg, x = _client_sharing_buffers("fedavg", indices=(3, 25))
    engine = EngineConfig(iterations=1, objective="cosine", priors={"bn": 1.0}, simulation="unrolled")
    unrolled = UnrolledMatcher([fedavg], engine, "cpu")
    y = fedavg.labels.view(1, 1, -1)
    at = {a: float(unrolled.values(a * x[None, None], y, False)) for a in (1.0, 0.5)}
    assert at[1.0] < 1e-3 < 0.1 < at[0.5]
