from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gradleak.capture import load_capture, load_truth, save_capture, save_truth
from gradleak.errors import CaptureError


def test_round_trip_keeps_every_tensor_and_field(face_observation, tmp_path: Path) -> None:
    obs, truth = face_observation
    path = save_capture(obs, tmp_path / "c.safetensors")
    back = load_capture(path)
    assert back.model_spec == obs.model_spec and back.input_shape == obs.input_shape
    assert back.mean == obs.mean and back.update_kind == "gradient" and back.labels is None
    assert all(torch.equal(back.update[k], v) for k, v in obs.update.items())
    assert all(torch.equal(back.weights[k], v) for k, v in obs.weights.items())
    t = load_truth(save_truth(truth, tmp_path / "t.safetensors"))
    assert torch.equal(t.inputs, truth.inputs) and torch.equal(t.labels, truth.labels)


def test_capture_written_by_one_process_is_attacked_by_another(tmp_path: Path) -> None:
    capture = tmp_path / "c.safetensors"
    write = ("from gradleak.cli import main; import sys; "
             f"sys.exit(main(['capture', '--indices', '7', '--num-classes', '100', '--out', r'{capture}']))")
    subprocess.run([sys.executable, "-c", write], check=True, capture_output=True)
    out = tmp_path / "report"
    attack = ("from gradleak.cli import main; import sys; "
              f"sys.exit(main(['attack', r'{capture}', '--truth', r'{tmp_path / 'c.truth.safetensors'}', "
              f"'--iterations', '200', '--quiet', '--out', r'{out}']))")
    subprocess.run([sys.executable, "-c", attack], check=True, capture_output=True)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mean"]["psnr"] > 30 and metrics["mean"]["label_accuracy"] == 1.0


def test_missing_key_is_named(face_observation, tmp_path: Path) -> None:
    obs, _ = face_observation
    path = save_capture(obs, tmp_path / "c.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["gradleak"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del meta["inputs"]
    save_file(tensors, str(path), metadata={"gradleak": json.dumps(meta)})
    with pytest.raises(CaptureError, match=r"c\.safetensors: metadata is missing key 'inputs'"):
        load_capture(path)


def test_wrong_shape_in_file_is_named(face_observation, tmp_path: Path) -> None:
    obs, _ = face_observation
    path = save_capture(obs.with_update({k: v for k, v in obs.update.items()}), tmp_path / "c.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["update/features.0.weight"] = torch.zeros(12, 1, 3, 3)
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(CaptureError, match=r"'features.0.weight' has shape \(12, 1, 3, 3\)"):
        load_capture(path)


def test_truncated_and_foreign_files(face_observation, tmp_path: Path) -> None:
    obs, _ = face_observation
    path = save_capture(obs, tmp_path / "c.safetensors")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CaptureError, match=r"cut\.safetensors: not a readable safetensors file"):
        load_capture(tmp_path / "cut.safetensors")
    torch.save({"update": obs.update}, tmp_path / "pickle.pt")
    with pytest.raises(CaptureError, match=r"pickle\.pt: not a readable safetensors file"):
        load_capture(tmp_path / "pickle.pt")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CaptureError, match="without gradleak metadata"):
        load_capture(tmp_path / "plain.safetensors")
    with pytest.raises(CaptureError, match="expected format 'gradleak.capture', found 'gradleak.truth'"):
        load_capture(save_truth(face_observation[1], tmp_path / "t.safetensors"))
    with pytest.raises(CaptureError, match="no such file"):
        load_capture(tmp_path / "absent.safetensors")
    header = json.dumps({"__metadata__": {"gradleak": "{not json"}}).encode()
    (tmp_path / "badjson.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(CaptureError, match="not valid JSON"):
        load_capture(tmp_path / "badjson.safetensors")
