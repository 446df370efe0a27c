"""Bring your own model: a CNN defined here (registered nowhere), one real training step, recovered by iDLG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

import gradleak
from gradleak.data import load_dataset
from gradleak.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


class SmallCNN(nn.Module):
    """Three sigmoid convolutions and a linear head: a user's model gradleak has never seen."""

    def __init__(self, channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 12, 5, padding=2), nn.Sigmoid(),
                                  nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
                                  nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid())
        self.head = nn.Linear(12 * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1))


def make_cnn(channels: int = 1, classes: int = 10) -> nn.Module:
    """The factory a red team names on the command line (``tests/test_record.py:make_cnn``)."""
    return SmallCNN(channels, classes)


@pytest.fixture(scope="module")
def face() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_dataset("faces").batch([3])
    return x, y % 10


def test_own_cnn_in_five_lines_of_user_code(face) -> None:
    x, y = face
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    # the user's code: a real training step, recorded; then the attack and the score (five lines)
    with gradleak.record(model, batch=(x, y)) as rec:
        F.cross_entropy(model(x), y).backward(); optimizer.step()  # noqa: E702
    recon = gradleak.ATTACKS.build("idlg", iterations=300).reconstruct(rec.observation)
    scores = gradleak.score(recon.inputs, recon.labels, rec.truth)
    assert scores.means()["psnr"] >= 30
    assert scores.label_correct == [True]
    # the truth never entered the observation; the weights are those before the step
    assert rec.observation.labels is None
    assert not torch.equal(rec.observation.weights["head.weight"], model.head.weight.detach())


def test_cli_attacks_own_model_from_three_files_in_a_second_process(face, tmp_path: Path) -> None:
    x, y = face
    torch.manual_seed(0)
    model = make_cnn()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    F.cross_entropy(model(x), y).backward()
    save_file(weights, str(tmp_path / "weights.safetensors"))
    torch.save({"state_dict": {f"_module.{n}": p.grad for n, p in model.named_parameters()}}, tmp_path / "grads.pt")
    gradleak.save_truth(gradleak.GroundTruth(x, y), tmp_path / "truth.safetensors")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "gradleak.cli", "attack", "--model", "tests/test_record.py:make_cnn",
         "--weights", str(tmp_path / "weights.safetensors"), "--update", str(tmp_path / "grads.pt"),
         "--input-shape", "1,32,32", "--num-classes", "10", "--truth", str(tmp_path / "truth.safetensors"),
         "--attack", "idlg", "--iterations", "300", "--quiet", "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["mean"]["psnr"] >= 30 and metrics["mean"]["label_accuracy"] == 1.0


def test_frozen_parameters_and_missing_gradients_are_left_out(face) -> None:
    x, y = face
    torch.manual_seed(0)
    model = SmallCNN()
    model.body[0].weight.requires_grad_(False)  # frozen, as in fine-tuning
    extra = nn.Parameter(torch.zeros(3))  # a parameter the loss never touches
    model.register_parameter("unused", extra)
    with gradleak.record(model, batch=(x, y)) as rec:
        F.cross_entropy(model(x), y).backward()
    assert rec.skipped == {"body.0.weight": "frozen", "unused": "no gradient"}
    assert set(rec.observation.update) == {n for n, _ in model.named_parameters()} - {"body.0.weight", "unused"}
    assert rec.observation.info["skipped"] == {"frozen": 1, "no gradient": 1}


def test_weight_delta_of_local_steps_is_attacked_as_fedavg(face) -> None:
    x, y = face
    torch.manual_seed(0)
    model = SmallCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    with gradleak.record(model, batch=(x, y), share="delta", lr=0.05, steps=3) as rec:
        for _ in range(3):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    obs = rec.observation
    assert obs.update_kind == "weight_delta" and obs.local_training == gradleak.LocalTraining(3, 0.05, 1)
    moved = model.head.bias.detach() - obs.weights["head.bias"]
    assert torch.allclose(obs.update["head.bias"], moved)


def test_opacus_wrapped_model_records_the_dp_gradient_without_prefixes(face) -> None:
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    x, y = face
    torch.manual_seed(0)
    inner = SmallCNN()
    model = GradSampleModule(inner)
    optimizer = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=0.0, max_grad_norm=1e-3,
                            expected_batch_size=1)
    with gradleak.record(model, batch=(x, y)) as rec:
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    update = rec.observation.update
    assert set(update) == {n for n, _ in inner.named_parameters()}
    # clipped to norm 1e-3 by Opacus: the recorded gradient is the DP one, not the raw one
    norm = torch.cat([g.flatten() for g in update.values()]).norm()
    assert norm == pytest.approx(1e-3, rel=1e-3)


def test_lora_adapter_update_holds_only_adapter_weights() -> None:
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=16))
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["c_attn"], lora_alpha=4, lora_dropout=0.0))
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    with gradleak.record(model, batch=ids) as rec:
        model(input_ids=ids, labels=ids).loss.backward()
    obs = rec.observation
    assert obs.task.kind == "causal_lm" and obs.inputs == gradleak.TokenInput(8, 64, None)
    assert obs.update and all("lora_" in name for name in obs.update)
    assert rec.truth.inputs.dtype == torch.long and torch.equal(rec.truth.inputs, ids)


def test_a_block_without_backward_is_a_clear_error(face) -> None:
    x, y = face
    with pytest.raises(ConfigError, match="no trainable parameter has a gradient"):
        with gradleak.record(SmallCNN(), batch=(x, y)):
            pass


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    F.cross_entropy(model(x), y).backward()


def test_a_model_built_with_non_default_arguments_rebuilds_from_its_capture_or_is_refused(face, tmp_path) -> None:
    """A capture stores the model as its class's import path and settings: a model built with non-default
    constructor arguments (4 classes, not 10) would rebuild as another architecture, so saving it without them is
    refused with one line naming the parameter; with ``model_kwargs`` it rebuilds in another process's way (from
    the file) with the same shapes; wrong ``model_kwargs`` and a registry ``model_spec`` are checked on entry."""
    x, y = face
    torch.manual_seed(0)
    model = SmallCNN(classes=4)
    with gradleak.record(model, batch=(x, y % 4)) as rec:
        _step(model, x, y % 4)
    assert rec.observation.update["head.weight"].shape == (4, 768)  # in this process the live module serves
    with pytest.raises(gradleak.errors.CaptureError, match=r"SmallCNN\(\) builds 'head.weight' shaped \(10, 768\), "
                                                           r"the model's is \(4, 768\).*model_kwargs"):
        gradleak.save_capture(rec.observation, tmp_path / "refused.safetensors")
    assert not (tmp_path / "refused.safetensors").exists()

    with gradleak.record(model, batch=(x, y % 4), model_kwargs={"classes": 4}) as rec:
        _step(model, x, y % 4)
    path = gradleak.save_capture(rec.observation, tmp_path / "step.safetensors")
    name = rec.observation.model_spec.name
    loaded = gradleak.load_capture(path, trust=[name])
    assert loaded.model_spec.kwargs == {"classes": 4} and loaded.model_spec.source == "import"
    assert loaded.build_model().head.weight.shape == (4, 768)
    assert torch.equal(loaded.update["head.weight"], rec.observation.update["head.weight"])

    with pytest.raises(ConfigError, match=r"record: model SmallCNN cannot be rebuilt from a capture: .*"
                                          r"SmallCNN\(\*\*\{'classes': 5\}\) builds 'head.weight' shaped \(5, 768\)"):
        with gradleak.record(model, batch=(x, y % 4), model_kwargs={"classes": 5}):
            pass

    lenet = gradleak.build_model("lenet", in_channels=1, num_classes=4, image_size=32)
    spec = gradleak.ModelSpec("lenet", {"in_channels": 1, "num_classes": 4, "image_size": 32})
    with gradleak.record(lenet, batch=(x, y % 4), model_spec=spec) as rec:
        _step(lenet, x, y % 4)
    assert gradleak.load_capture(gradleak.save_capture(rec.observation, tmp_path / "lenet.safetensors")) \
        .model_spec == spec
    with pytest.raises(ConfigError, match=r"lenet\(\*\*\{'in_channels': 1\}\) builds 'classifier.weight' shaped \(10, 768\)"):
        with gradleak.record(lenet, batch=(x, y % 4), model_spec=gradleak.ModelSpec("lenet", {"in_channels": 1})):
            pass


def test_a_recorded_opacus_step_carries_its_epsilon_into_the_capture(tmp_path, assert_matches_google) -> None:
    """A user's own Opacus training (``PrivacyEngine.make_private``, Poisson sampling by its ``DPDataLoader``)
    recorded with ``privacy=engine``: the capture's metadata holds the accountant's epsilon after the step, its
    delta, the accountant, the noise multiplier and the sample rate, and Google's accountant confirms the figure
    for one step at that rate. (Reports write the observation's info, so ``metrics.json`` carries it too.)"""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    xs, ys = load_dataset("faces").batch(list(range(32)))
    torch.manual_seed(0)
    module = SmallCNN()
    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, loader = engine.make_private(
        module=module, optimizer=torch.optim.SGD(module.parameters(), lr=0.1),
        data_loader=DataLoader(TensorDataset(xs, ys % 10), batch_size=8), noise_multiplier=1.0, max_grad_norm=1.0,
    )
    x, y = next(xb for xb in iter(loader) if len(xb[0]))  # a Poisson batch (expected size 8 of 32)
    with gradleak.record(model, batch=(x, y), privacy=engine) as rec:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    privacy = rec.observation.info["privacy"]
    assert privacy["epsilon"] == pytest.approx(engine.get_epsilon(1e-5), rel=1e-12)
    assert (privacy["delta"], privacy["accountant"], privacy["noise_multiplier"], privacy["sample_rate"],
            privacy["steps"]) == (1e-5, "opacus.rdp", 1.0, 0.25, 1)
    assert privacy["sampling"].startswith("poisson")
    assert_matches_google(privacy["epsilon"], 1.0, 0.25, 1)
    loaded = gradleak.load_capture(gradleak.save_capture(rec.observation, tmp_path / "dp.safetensors"),
                                   trust=[rec.observation.model_spec.name])
    assert loaded.info["privacy"] == privacy
    # the report of an attack on the capture states it (metrics.json's observation)
    from gradleak.attacks.base import Reconstruction
    from gradleak.report.files import metrics_dict

    report = metrics_dict(loaded, Reconstruction(x, y, "none", {}), None, None, seed=0, device="cpu")
    assert report["observation"]["info"]["privacy"] == privacy
    with pytest.raises(ConfigError, match="privacy must be gradleak's Privacy or an Opacus"):
        with gradleak.record(model, batch=(x, y), privacy="strong"):
            pass
