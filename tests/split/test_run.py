import json

from gradleak.cli import main


def test_split_command_reports_leakage_beside_the_majority_class_and_the_best_guess(tmp_path):
    out = tmp_path / "run"
    assert main(["split", "--steps", "60", "--observe", "4", "--cut", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    learning, white = metrics["learning"], metrics["white_box"]
    assert metrics["cut"] == 1 and learning["learned"]
    assert learning["test_accuracy"] > learning["majority_accuracy"] + 0.4
    # cut 1 keeps the image: the white-box inversion beats the best public digit (README table)
    assert white["psnr"] > white["best_baseline_psnr"] + 3.0 and white["leaked"] >= 0.5
    for attack in ("norm_attack", "cosine_attack"):
        assert set(metrics[attack]) == {"auc", "inferred_accuracy", "majority_accuracy", "leaked"}
    assert (out / "grid.png").stat().st_size > 1000


def test_split_command_rejects_a_bad_cut(tmp_path, capsys):
    assert main(["split", "--cut", "5", "--out", str(tmp_path / "x")]) == 2
    assert "block 1, 2 or 3" in capsys.readouterr().err
