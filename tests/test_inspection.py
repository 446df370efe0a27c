"""``gradleak inspect``: what a file holds, without attacking or running model code."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gradleak.capture import save_capture, save_truth
from gradleak.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


def test_inspect_a_capture_and_its_truth(face_observation, tmp_path: Path, capsys) -> None:
    obs, truth = face_observation
    path = save_capture(obs.with_update(obs.update), tmp_path / "c.safetensors")
    save_truth(truth, tmp_path / "t.safetensors", capture=obs)
    assert main(["inspect", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "lenet (registry)"
    assert json.loads(summary["inputs"]) == {"kind": "image", "shape": [1, 32, 32], "mean": list(obs.mean),
                                             "std": list(obs.std)}
    # LeNet, 1 channel, 100 classes: three 5x5 convolutions of 12 channels (w + b) and a 768 x 100 head
    assert summary["update"] == "gradient of 8 tensors, 84436 elements, batch size 1"
    assert summary["leaked besides the update"] == "nothing"
    assert main(["inspect", str(tmp_path / "t.safetensors")]) == 0
    assert summary["update digest"] in capsys.readouterr().out  # the truth names its capture


def test_inspect_a_version_1_capture_and_a_plain_gradient_file(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(FIXTURES / "capture_v1_digits.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "version 1" in out and '"num_classes": 10' in out
    torch.save({"_module.fc.weight": torch.zeros(3, 4), "_module.fc.bias": torch.zeros(3)}, tmp_path / "g.pt")
    assert main(["inspect", str(tmp_path / "g.pt"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["entries"] == 2 and summary["elements"] == 15
    assert summary["tensors"] == ["fc.weight  (3, 4)  float32", "fc.bias  (3,)  float32"]


def test_inspect_names_an_untrusted_import_path_without_importing(tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    meta = {"format": "gradleak.capture", "version": 2, "model": {"source": "import", "name": "os:system",
                                                                    "kwargs": {}}, "update_kind": "gradient"}
    save_file({"update/w": torch.zeros(1)}, str(tmp_path / "e.safetensors"), metadata={"gradleak": json.dumps(meta)})
    assert main(["inspect", str(tmp_path / "e.safetensors")]) == 0
    assert "not trusted: attack with --trust-model os" in capsys.readouterr().out


def test_inspect_refuses_a_pickle_with_code(tmp_path: Path, capsys) -> None:
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("executed",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps(Boom()))
    assert main(["inspect", str(tmp_path / "evil.pt")]) == 2
    captured = capsys.readouterr()
    assert "executed" not in captured.out and "weights_only=True" in captured.err
