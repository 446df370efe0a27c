"""Checkpoints are refused unless they are whole, belong to this very attack, and hold sane counters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradleak.attacks import ATTACKS
from gradleak.attacks.checkpoint import read_checkpoint, write_checkpoint
from gradleak.attacks.optimization import EngineConfig, optimize
from gradleak.errors import CaptureError
from gradleak.experiment import ExperimentConfig, make_victim

ADAM = dict(optimizer="adam", lr=0.1, objective="cosine", box=True)


@pytest.fixture(scope="module")
def victim():
    return make_victim(ExperimentConfig(dataset="digits", image_size=8, model="lenet", num_classes=10, indices=(3,),
                                        leak_labels=True))


def _run(obs, path: Path, iterations: int = 6):
    config = EngineConfig(iterations=iterations, checkpoint_every=2, **ADAM)
    return optimize(obs, config, labels=obs.labels, attack_name="t", settings={}, seed=1, checkpoint=path)


def test_a_flipped_byte_anywhere_is_refused_not_resumed(victim, tmp_path: Path) -> None:
    obs, _ = victim
    path = tmp_path / "a.ckpt"
    first = _run(obs, path)
    assert torch.equal(_run(obs, path).inputs, first.inputs)  # an intact finished checkpoint resumes
    data = bytearray(path.read_bytes())
    for where in (len(data) // 2, len(data) - 3):  # a tensor's bytes, the zip directory
        flipped = bytearray(data)
        flipped[where] ^= 0x01
        path.write_bytes(bytes(flipped))
        with pytest.raises(CaptureError, match=r"a\.ckpt is damaged or altered"):
            _run(obs, path)
    path.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(CaptureError, match=r"a\.ckpt is damaged or altered"):
        _run(obs, path)
    torch.save({"fingerprint": "x"}, path)  # a bare torch file (no digest), e.g. from an older gradleak
    with pytest.raises(CaptureError, match=r"a\.ckpt is not a gradleak checkpoint"):
        _run(obs, path)


def test_dlg_and_idlg_with_the_same_engine_settings_do_not_share_a_checkpoint(victim, tmp_path: Path) -> None:
    obs, _ = victim
    path = tmp_path / "dlg.ckpt"
    dlg = ATTACKS.build("dlg", iterations=4, checkpoint=str(path))
    idlg = ATTACKS.build("idlg", iterations=4, init="randn", checkpoint=str(path))
    assert dlg.engine(obs) == idlg.engine(obs)  # same engine settings: only labels and attack differ
    dlg.reconstruct(obs, seed=0)
    with pytest.raises(CaptureError, match="belongs to another attack"):
        idlg.reconstruct(obs, seed=0)
    moved = tmp_path / "moved.ckpt"  # the path itself is not part of the computation
    moved.write_bytes(path.read_bytes())
    ATTACKS.build("dlg", iterations=4, checkpoint=str(moved)).reconstruct(obs, seed=0)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("evals", 10**9, r"state\.evals \(iterations done\) must be an integer in \[0, 31\], got 1000000000"),
        ("evals", -1, r"state\.evals .* got -1"),
        ("evals", True, r"state\.evals .* got True"),
        ("stall", 2.5, r"state\.stall must be an integer"),
        ("best", float("nan"), r"state\.best must be a number"),
    ],
)
def test_crafted_counters_are_refused(victim, tmp_path: Path, field: str, value: object, message: str) -> None:
    obs, _ = victim
    path = tmp_path / "c.ckpt"
    _run(obs, path, iterations=6)
    saved = read_checkpoint(path)
    saved["state"][field] = value
    write_checkpoint(path, saved)  # a valid digest: the content is what is crafted
    with pytest.raises(CaptureError, match=message):
        _run(obs, path, iterations=6)


def test_crafted_optimizer_step_and_variable_shape_are_refused(victim, tmp_path: Path) -> None:
    obs, _ = victim
    path = tmp_path / "o.ckpt"
    _run(obs, path)
    saved = read_checkpoint(path)
    saved["optimizer"]["state"][0]["step"] = torch.tensor(1e12)
    write_checkpoint(path, saved)
    with pytest.raises(CaptureError, match=r"optimizer step must be an integer in \[0, 31\]"):
        _run(obs, path)
    saved = read_checkpoint(path)
    saved["optimizer"]["state"][0]["step"] = torch.tensor(6.0)
    saved["variables"][0] = torch.zeros(2, 2)
    write_checkpoint(path, saved)
    with pytest.raises(CaptureError, match=r"variable torch\.float32 \(2, 2\), expected"):
        _run(obs, path)
