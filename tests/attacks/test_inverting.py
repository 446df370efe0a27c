"""Inverting Gradients (Geiping et al. 2020) on the ConvNet: a small budget must beat noise."""

from __future__ import annotations

import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.inverting import InvertingGradients
from gradleak.experiment import ExperimentConfig, make_victim
from gradleak.metrics import psnr, score


def test_paper_defaults_and_lookup() -> None:
    attack = ATTACKS.build("inverting")
    assert isinstance(attack, InvertingGradients)
    engine = attack.engine()
    assert (engine.objective, engine.optimizer, engine.signed_gradients, engine.box) == ("cosine", "adam", True, True)
    assert engine.schedule == "step" and engine.lr == 0.1 and engine.priors["tv"] > 0


def test_small_budget_beats_noise_on_convnet() -> None:
    # ConvNet of Geiping et al. at width 16 (width 64 runs in benchmarks/bench_optimization.py), random init.
    obs, truth = make_victim(ExperimentConfig(dataset="photos", model="convnet", model_kwargs={"width": 16},
                                              indices=(3,), leak_labels=True))
    recon = ATTACKS.build("inverting", iterations=300, init="rand", schedule="cosine").reconstruct(obs, seed=0)
    noise = torch.rand(truth.inputs.shape, generator=torch.Generator().manual_seed(0))
    noise_psnr = float(psnr(noise, truth.inputs).mean())
    achieved = score(recon.inputs, recon.labels, truth).means()["psnr"]
    assert achieved is not None and achieved > noise_psnr + 1.5, (achieved, noise_psnr)
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
