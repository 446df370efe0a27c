from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradleak.cli import build_parser, main


def test_every_command_has_help(capsys) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: gradleak" in capsys.readouterr().out


def test_demo_writes_grid_and_metrics_schema(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--image-size", "16", "--iterations", "150", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "SSIM" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema"] == "gradleak.metrics" and metrics["version"] == 1
    assert set(metrics["mean"]) >= {"psnr", "ssim", "mse", "label_accuracy"}
    assert metrics["mean"]["psnr"] > 30 and metrics["mean"]["label_accuracy"] == 1.0
    assert len(metrics["per_sample"]["psnr"]) == 1
    assert metrics["attack"]["name"] == "idlg" and metrics["attack"]["settings"]["iterations"] == 150
    assert metrics["wall_time_s"] > 0 and metrics["config"]["dataset"] == "faces"
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_capture_exits_2_with_the_reason(tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "update.safetensors"
    bogus.write_bytes(b"definitely not safetensors")
    assert main(["attack", str(bogus), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "gradleak: error:" in err and "update.safetensors: not a readable safetensors file" in err


def test_unknown_names_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--dataset", "imagenet", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["demo", "--model", "vgg", "--quiet", "--out", str(tmp_path)]) == 2
    assert "unknown model 'vgg'" in capsys.readouterr().err
    assert main(["demo", "--attack-arg", "novalue", "--out", str(tmp_path)]) == 2
    assert "--attack-arg expects KEY=VALUE" in capsys.readouterr().err


def test_list_names_the_registries(capsys) -> None:
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {"dlg", "idlg"} <= set(listing["attacks"])
    assert {"faces", "digits", "photos"} <= set(listing["datasets"])
