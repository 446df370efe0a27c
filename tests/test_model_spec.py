"""Model sources: what loading a capture may import and execute, and Hugging Face models from configs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import gradleak
from gradleak.capture import load_capture, save_capture
from gradleak.errors import CaptureError
from gradleak.model_spec import ModelSpec, is_trusted, trust_model
from gradleak.observation import Observation

ROOT = Path(__file__).resolve().parents[1]


def _capture_naming(path: Path, model_name: str, base: Observation, kwargs: dict | None = None) -> Path:
    """A capture whose model is named by import path (what a hostile file can say)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    save_capture(base, path)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["gradleak"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["model"] = {"source": "import", "name": model_name, "kwargs": kwargs or {}}
    save_file(tensors, str(path), metadata={"gradleak": json.dumps(meta)})
    return path


@pytest.mark.parametrize("name", ["os:system", "subprocess:run", "builtins:exec"])
def test_capture_naming_a_dangerous_callable_only_raises(face_observation, tmp_path: Path, name: str) -> None:
    obs, _ = face_observation
    path = _capture_naming(tmp_path / "evil.safetensors", name, obs)
    with pytest.raises(CaptureError, match=rf"would import '{name.split(':')[0]}', which runs its code; it is not "
                                           "trusted"):
        load_capture(path)


def test_untrusted_module_is_never_imported(face_observation, tmp_path: Path) -> None:
    """A module with a side effect at import: loading the capture must not import it (checked in a fresh process)."""
    obs, _ = face_observation
    package = tmp_path / "pkg"
    package.mkdir()
    marker = tmp_path / "imported.txt"
    (package / "evilmodels.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("imported")
        def factory():
            raise SystemExit("ran")
    """))
    path = _capture_naming(tmp_path / "c.safetensors", "evilmodels:factory", obs)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(package)!r})
        from gradleak.capture import load_capture
        from gradleak.errors import CaptureError
        try:
            load_capture({str(path)!r})
        except CaptureError as exc:
            print("refused:", exc)
        print("in sys.modules:", "evilmodels" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    assert "refused:" in done.stdout and "not trusted" in done.stdout, done.stdout + done.stderr
    assert "in sys.modules: False" in done.stdout
    assert not marker.exists()
    # the CLI answers with one line and exit code 2
    cli = subprocess.run([sys.executable, "-m", "gradleak.cli", "attack", str(path), "--quiet",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(package)}, cwd=ROOT)
    assert cli.returncode == 2 and "--trust-model evilmodels" in cli.stderr and "Traceback" not in cli.stderr
    assert not marker.exists()


def test_trusted_factory_is_built(face_observation, tmp_path: Path) -> None:
    """Trust names the factory: trusting its package is not enough; naming the factory itself is."""
    obs, _ = face_observation
    path = _capture_naming(tmp_path / "c.safetensors", "gradleak.models.lenet:lenet", obs, obs.model_spec.kwargs)
    assert not is_trusted("gradleak.models.lenet:lenet")
    with pytest.raises(CaptureError, match="is not a factory you trusted.*--trust-model gradleak.models.lenet:lenet"):
        load_capture(path, trust=["gradleak.models"])
    loaded = load_capture(path, trust=["gradleak.models.lenet:lenet"])
    assert is_trusted("gradleak.models.lenet:lenet") and is_trusted("gradleak.models.lenet")
    assert loaded.model_spec.source == "import"
    for name, p in loaded.build_model().named_parameters():
        assert torch.equal(p.detach(), obs.weights[name])


def test_hugging_face_config_cannot_load_remote_code() -> None:
    with pytest.raises(CaptureError, match="'auto_map' would load code from outside transformers"):
        ModelSpec("gpt2", {"config": {"auto_map": {"AutoModel": "evil.Model"}}, "head": "causal_lm"},
                  source="huggingface")
    with pytest.raises(CaptureError, match="cannot be built from its config"):
        ModelSpec("no-such-architecture", {"config": {}, "head": "causal_lm"}, source="huggingface").build()


def test_model_size_is_checked_before_allocation() -> None:
    spec = ModelSpec("mlp", {"in_channels": 3, "image_size": 4096, "hidden": [100000, 100000]})
    with pytest.raises(CaptureError, match="parameter count is .* above the limit"):
        spec.build()


_HF_ROUNDTRIP = """
import socket, sys, torch
def no_network(*args, **kwargs):
    raise RuntimeError("network access attempted")
socket.socket.connect = no_network
socket.create_connection = no_network
from gradleak.capture import load_capture
obs = load_capture(sys.argv[1])
model = obs.build_model().eval()
ids = torch.arange(12).remainder(obs.inputs.vocab_size).view(2, 6)
with torch.no_grad():
    logits = model(input_ids=ids).logits
torch.save(logits, sys.argv[2])
"""


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_hugging_face_models_round_trip_through_a_capture_in_another_process(kind: str, tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=97, n_positions=16))
        ids = torch.randint(0, 97, (2, 6))
        batch: object = ids
        loss = lambda: model(input_ids=ids, labels=ids).loss  # noqa: E731
    else:
        model = BertForSequenceClassification(BertConfig(
            vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=16, num_labels=3))
        ids = torch.randint(0, 97, (2, 6))
        labels = torch.tensor([0, 2])
        batch = (ids, labels)
        loss = lambda: model(input_ids=ids, labels=labels).loss  # noqa: E731
    model.eval()  # no dropout: outputs must be comparable
    with gradleak.record(model, batch=batch) as rec:  # type: ignore[arg-type]
        loss().backward()
    obs = rec.observation
    assert obs.model_spec.source == "huggingface"
    assert obs.task.kind == ("causal_lm" if kind == "gpt2" else "classification")
    path = save_capture(obs, tmp_path / f"{kind}.safetensors")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _HF_ROUNDTRIP, str(path), str(tmp_path / "logits.pt")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    rebuilt = torch.load(tmp_path / "logits.pt", weights_only=True)
    with torch.no_grad():
        expected = model(input_ids=torch.arange(12).remainder(97).view(2, 6)).logits
    assert torch.equal(rebuilt, expected)


def test_a_model_file_that_fails_to_import_fails_the_same_way_again(tmp_path) -> None:
    """A file whose import raised is not left half-run in ``sys.modules``: the next build says why again, not
    that the factory is missing."""
    path = tmp_path / "broken_net.py"
    path.write_text("import no_such_module_here\n\ndef build():\n    pass\n")
    trust_model(f"{path}:build")
    spec = ModelSpec(f"{path}:build", {}, source="import")
    for _ in range(2):
        with pytest.raises(CaptureError, match="No module named 'no_such_module_here'"):
            spec.build()
