import json

from gradleak.cli import main


def test_split_command_writes_a_report_folder(tmp_path):
    out = tmp_path / "run"
    assert main(["split", "--steps", "10", "--observe", "2", "--cut", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cut"] == 1 and metrics["white_box_psnr"] > 20.0  # cut 1 keeps the image (README table)
    assert 0.0 <= metrics["norm_auc"] <= 1.0
    assert (out / "grid.png").stat().st_size > 1000


def test_split_command_rejects_a_bad_cut(tmp_path, capsys):
    assert main(["split", "--cut", "5", "--out", str(tmp_path / "x")]) == 2
    assert "block 1, 2 or 3" in capsys.readouterr().err
