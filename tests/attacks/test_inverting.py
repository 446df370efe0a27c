"""Inverting Gradients (Geiping et al. 2020): paper defaults, and a reconstruction that beats every guess."""

from __future__ import annotations

import pytest

from gradleak.attacks import ATTACKS
from gradleak.attacks.inverting import InvertingGradients
from gradleak.experiment import ExperimentConfig, make_victim, public_set


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
