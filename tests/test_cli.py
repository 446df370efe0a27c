from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradleak.cli import build_parser, main
from gradleak.cli.flags import parse_assignments


def test_every_command_has_help(capsys) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert "usage: gradleak" in capsys.readouterr().out


def test_every_command_runs_from_its_own_module_named_in_the_package_docstring() -> None:
    """One module per command (``gradleak.cli.<module>.run``), and the package docstring names each command."""
    import gradleak.cli
    from gradleak.cli import COMMAND_MODULES, command_module

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == set(COMMAND_MODULES)
    for name in commands:
        assert callable(command_module(name).run), name
        assert f"``{name}``" in (gradleak.cli.__doc__ or ""), name


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


# --- hostile command lines (issue 11): one-line errors before any work, nothing overwritten by surprise ---

SMALL = ["--dataset", "digits", "--image-size", "8", "--num-classes", "10", "--quiet"]


def test_python_dash_m_gradleak_runs_the_cli(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "gradleak", "demo", "--device", "cuda:7", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env=env)
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight CUDA devices")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("gradleak: error: --device 'cuda:7'") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "tpu"], "--device 'tpu' is not a device torch knows"),
        (["--device", "meta"], "gradleak runs on cpu, cuda, mps, not meta"),
        (["--image-size", "0"], "image_size must be a positive integer, got 0"),
        (["--image-size", "100000"], "image_size 100000 makes 30000000000 elements per image, above the limit"),
        (["--num-classes", "-3"], "num_classes must be a positive integer, got -3"),
        (["--attack-arg", "iterations=abc"], "attack 'idlg' setting 'iterations' must be an integer, got str 'abc'"),
        (["--attack-arg", "lr=fast"], "attack 'idlg' setting 'lr' must be a number, got str 'fast'"),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    assert main(["demo", *SMALL, "--out", str(tmp_path / "d"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()  # refused before any work


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--attack-arg", "repair_positions=abc"], "attack 'dager' setting 'repair_positions' must be an integer, "
                                                   "got str 'abc'"),
        (["--attack-arg", "nosuch=1"], "attack 'dager' has no setting 'nosuch'"),
        (["--attack-arg", "assemble_sweeps=-2"], "assemble_sweeps must lie in [0, inf), got -2"),
    ],
)
def test_bad_text_attack_settings_are_one_line_errors(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    """The text demo checks its attack's settings at the boundary as the image demo does (it used to hand a
    string to DAGER, which failed with a TypeError traceback)."""
    assert main(["demo", "--text", "--records", "1", "--quiet", "--out", str(tmp_path / "d"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()  # refused before any work


def test_cuda_without_cuda_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["demo", *SMALL, "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "--device 'cuda': CUDA is not available here" in capsys.readouterr().err


def test_attack_arg_checked_before_the_capture_is_read(tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "c.safetensors"
    bogus.write_bytes(b"not read")
    assert main(["attack", str(bogus), "--attack-arg", "restarts=two", "--out", str(tmp_path / "r")]) == 2
    assert "--attack-arg: attack 'idlg' setting 'restarts' must be an integer, got str 'two'" in capsys.readouterr().err


def test_out_that_is_a_file_is_refused_before_the_work(tmp_path: Path, capsys) -> None:
    target = tmp_path / "report"
    target.write_text("my notes")
    for command in (["demo", *SMALL], ["sweep", str(tmp_path / "none.toml")], ["fl-audit"]):
        assert main([*command, "--out", str(target)]) == 2
        assert f"--out {target}: an existing file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "my notes"


def test_capture_never_overwrites_without_force(tmp_path: Path, capsys) -> None:
    cap = tmp_path / "c.safetensors"
    base = ["capture", *SMALL, "--indices", "4"]
    assert main([*base, "--out", str(cap), "--truth", str(cap)]) == 2
    assert "--out and --truth are the same file" in capsys.readouterr().err
    assert not cap.exists()
    assert main([*base, "--out", str(cap)]) == 0
    first = cap.read_bytes()
    assert main([*base, "--seed", "5", "--out", str(cap)]) == 2
    assert f"--out {cap} already exists; pass --force to overwrite it" in capsys.readouterr().err
    assert cap.read_bytes() == first
    other = tmp_path / "d.safetensors"  # a new capture whose truth would land on the existing truth file
    assert main([*base, "--out", str(other), "--truth", str(tmp_path / "c.truth.safetensors")]) == 2
    assert "--truth" in capsys.readouterr().err and not other.exists()
    assert main([*base, "--model", "mlp", "--out", str(cap), "--force"]) == 0
    assert cap.read_bytes() != first


def test_reused_out_folder_shows_no_stale_file_and_report_never_overwrites_its_input(tmp_path: Path,
                                                                                      capsys) -> None:
    out = tmp_path / "run"
    assert main(["demo", *SMALL, "--iterations", "3", "--out", str(out)]) == 0
    assert (out / "trace.png").is_file()
    # the closed-form attack has no objective trace: the earlier run's trace.png must not stay beside its grid
    assert main(["demo", *SMALL, "--model", "mlp", "--attack", "linear", "--out", str(out)]) == 0
    assert not (out / "trace.png").exists()
    assert json.loads((out / "metrics.json").read_text())["attack"]["name"] == "linear"
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text().count("data:image/png") == 1  # this run's grid only
    before = (out / "metrics.json").read_bytes()
    assert main(["report", str(out), "--out", str(out / "metrics.json")]) == 2
    assert "is the input" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before


def test_fl_audit_settings_checked_before_the_federation_runs(tmp_path: Path, capsys) -> None:
    import time

    config = tmp_path / "audit.toml"
    config.write_text('[federation]\nnum_clients = 2\n[audit]\nattack = "idlg"\nattack_kwargs = { iterations = "x" }\n')
    start = time.perf_counter()
    assert main(["fl-audit", str(config), "--out", str(tmp_path / "a")]) == 2
    assert "[audit] attack_kwargs: attack 'idlg' setting 'iterations' must be an integer" in capsys.readouterr().err
    assert time.perf_counter() - start < 10 and not (tmp_path / "a").exists()  # no Flower, no Ray started


def test_allow_large_lifts_the_image_size_bound(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.npz"
    argv = ["demo", "--image-size", "1100", "--dataset", f"npz:{missing}", "--quiet", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "image_size 1100 makes 3630000 elements per image, above the limit" in capsys.readouterr().err
    assert main([*argv, "--allow-large"]) == 2  # the bound is lifted: the next check is the missing file
    assert f"{missing}: file not found" in capsys.readouterr().err


def test_attack_with_truth_prints_the_verdict_beside_the_public_guesses(tmp_path: Path, capsys) -> None:
    """``attack --truth --public``: metrics.json holds every guess's scores, the per-sample verdict and the
    re-identification line-up; the printed verdict names the best guess. Bad margins are one line."""
    fixtures = Path(__file__).parent / "fixtures"
    capture, truth = fixtures / "capture_v1_digits.safetensors", fixtures / "capture_v1_digits.truth.safetensors"
    out = tmp_path / "att"
    assert main(["attack", str(capture), "--truth", str(truth), "--public", "faces", "--iterations", "20",
                 "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["baselines"]["psnr"]) == {"gray", "mean image", "public set (best)"}
    assert metrics["per_sample"]["leaked"] is not None and metrics["reidentification"]["pixels"]["lineup"] == 100
    best = metrics["mean"]["best_baseline_psnr"]
    assert f"best guess {best:.2f} dB" in printed and metrics["verdict"] in printed
    assert main(["attack", str(capture), "--truth", str(truth), "--margin-ssim", "-0.1", "--out",
                 str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gradleak: error: --margin-ssim must be a finite number >= 0, got -0.1"]


def test_settings_take_the_config_files_words_for_booleans_and_null() -> None:
    """The settings errors say "true or false": the flag takes those words (and Python's), not the string 'true'."""
    assert parse_assignments(["per_epoch=true", "tied=False", "rank=null", "name=truthy", "n=3"], "--attack-arg") \
        == {"per_epoch": True, "tied": False, "rank": None, "name": "truthy", "n": 3}
