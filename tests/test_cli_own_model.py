"""The user's own model in every command that builds a victim (issue 22 item 6): ``capture``, ``defend`` and
``tradeoff`` take ``--model package.module:factory`` or ``path/file.py:factory`` as ``attack`` does, trusted by
being named on the command line, or ``hf:MODEL_TYPE --model-config FILE``; a module named by file path, or by
module path from the working folder, imports (with the modules beside it) without ``PYTHONPATH``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from gradleak.capture import load_capture, load_truth
from gradleak.cli import main

#: the user's factory imports a helper that sits beside it: only the file's folder on the import path finds it
NET = '''
from torch import nn

from blocks import head


def build(in_channels=1, num_classes=10, image_size=8):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.Sigmoid(),
                         head(4 * image_size * image_size, num_classes))
'''
BLOCKS = '''
from torch import nn


def head(features, classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(features, classes))
'''


def _user_model(folder: Path, package: bool = False) -> None:
    """A model file and its helper beside it; as a package (imported by module path) the factory imports its
    helper relatively, as a package's module must: ``from blocks`` would find only a ``blocks`` some earlier
    import of the file-path kind left in ``sys.modules``."""
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "net.py").write_text(NET.replace("from blocks import", "from .blocks import") if package else NET)
    (folder / "blocks.py").write_text(BLOCKS)


def _model_of(capture: Path) -> dict:
    with safe_open(str(capture), framework="pt") as f:
        meta = f.metadata()
    return json.loads(meta["gradleak"])["model"] if "gradleak" in meta else json.loads(meta["model"])


def test_capture_imports_a_model_file_and_its_neighbours_without_pythonpath(tmp_path: Path) -> None:
    """The ``gradleak`` script (whose sys.path holds neither the working folder nor the file's) captures with a
    factory named by file path; the capture records it, and a reader rebuilds it once the user trusts it."""
    _user_model(tmp_path / "mine")
    script = Path(sys.executable).with_name("gradleak")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(script), "capture", "--model", "mine/net.py:build", "--dataset", "digits",
                           "--image-size", "8", "--indices", "0", "--out", "cap.safetensors"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    model = _model_of(tmp_path / "cap.safetensors")
    assert model["source"] == "import" and model["name"] == f"{(tmp_path / 'mine' / 'net.py').resolve()}:build"

    obs = load_capture(tmp_path / "cap.safetensors", trust=[str(tmp_path / "mine" / "net.py") + ":build"])
    assert set(dict(obs.model_spec.build().named_parameters())) == set(obs.update)  # rebuilt from the capture


def test_capture_imports_a_module_path_from_the_working_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    _user_model(tmp_path / "ownpkg", package=True)
    monkeypatch.delitem(sys.modules, "blocks", raising=False)  # only the package's own helper may serve
    monkeypatch.chdir(tmp_path)
    assert str(tmp_path) not in sys.path and "" not in sys.path  # nothing but gradleak puts it there
    assert main(["capture", "--model", "ownpkg.net:build", "--dataset", "digits", "--image-size", "8",
                 "--indices", "1", "--out", "c.safetensors"]) == 0, capsys.readouterr().err
    assert _model_of(tmp_path / "c.safetensors")["name"] == "ownpkg.net:build"
    assert str(tmp_path) not in sys.path  # added for that import only


def test_capture_builds_a_hugging_face_image_classifier_from_its_config(tmp_path: Path, capsys) -> None:
    """``--model hf:vit --model-config FILE``: a ViT from ``transformers``, shaped by the victim (channels, classes,
    image size); the capture records the config, and the model rebuilt from it alone gives the captured
    gradient on the true batch, bit for bit."""
    config = tmp_path / "vit.json"
    config.write_text(json.dumps({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                  "intermediate_size": 32, "patch_size": 4}))
    cap = tmp_path / "vit.safetensors"
    assert main(["capture", "--model", "hf:vit", "--model-config", str(config), "--dataset", "digits",
                 "--image-size", "8", "--indices", "0,1", "--out", str(cap)]) == 0, capsys.readouterr().err
    obs = load_capture(cap)
    truth = load_truth(cap.with_name("vit.truth.safetensors"), capture=obs)
    assert obs.model_spec.source == "huggingface" and obs.model_spec.kwargs["head"] == "image_classification"
    assert obs.model_spec.kwargs["config"] | {"num_channels": 1, "num_labels": 10, "image_size": 8} == \
        obs.model_spec.kwargs["config"]
    model = obs.model_spec.build()
    model.load_state_dict(obs.weights)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (obs.inputs.mean, obs.inputs.std))
    loss = torch.nn.functional.cross_entropy(model((truth.inputs - mean) / std), truth.labels)
    names, params = zip(*model.named_parameters())
    for name, grad in zip(names, torch.autograd.grad(loss, params)):
        assert torch.equal(grad, obs.update[name]), name


def test_hugging_face_models_need_their_config_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["capture", "--model", "hf:vit", "--out", str(tmp_path / "c.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err == "gradleak: error: --model hf:vit needs --model-config (the architecture's config.json)\n"
    assert main(["capture", "--model-config", "x.json", "--out", str(tmp_path / "c.safetensors")]) == 2
    assert "--model-config applies to hf: models, not --model lenet" in capsys.readouterr().err


def test_defend_trains_the_users_own_model(tmp_path: Path, monkeypatch, capsys) -> None:
    _user_model(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    assert main(["defend", "--defense", "gaussian", "--defense-arg", "std=0.01", "--model", "mine/net.py:build",
                 "--dataset", "digits", "--image-size", "8", "--train-steps", "5", "--out", "u"]) == 0, \
        capsys.readouterr().err
    assert json.loads((tmp_path / "u" / "utility.json").read_text())["config"]["model"] == "mine/net.py:build"


def test_tradeoff_attacks_and_trains_the_users_own_model(tmp_path: Path, monkeypatch, capsys) -> None:
    _user_model(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    assert main(["tradeoff", "--defense", "gaussian", "--values", "0", "--model", "mine/net.py:build",
                 "--dataset", "digits", "--image-size", "8", "--images", "0", "--iterations", "5",
                 "--train-steps", "5", "--quiet", "--out", "t"]) == 0, capsys.readouterr().err
