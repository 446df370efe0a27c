"""The trade-off command: table rows for the baseline and each strength, files and plot written."""

from __future__ import annotations

import csv
import json

import pytest

from gradleak.cli import main
from gradleak.errors import ConfigError
from gradleak.experiment import ExperimentConfig
from gradleak.tradeoff import TradeoffConfig
from gradleak.utility import UtilityConfig


def test_tradeoff_command_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "t"
    rc = main(["tradeoff", "--defense", "gaussian", "--values", "0,10", "--dataset", "digits", "--images", "0",
               "--iterations", "15", "--train-steps", "20", "--quiet", "--out", str(out)])
    assert rc == 0
    rows = list(csv.DictReader((out / "tradeoff.csv").open()))
    assert [r["defense"] for r in rows] == ["none", "gaussian", "gaussian"]
    assert rows[0]["std"] == "" and [float(r["std"]) for r in rows[1:]] == [0.0, 10.0]
    for key in ("psnr", "ssim", "label_accuracy", "test_accuracy", "epsilon"):
        assert key in rows[0]
    # std 0 is the undefended computation: same leakage and accuracy as the baseline row
    assert float(rows[1]["psnr"]) == pytest.approx(float(rows[0]["psnr"]))
    assert float(rows[1]["test_accuracy"]) == float(rows[0]["test_accuracy"])
    # std 10 drowns the gradient: no reconstruction, and training suffers
    assert float(rows[2]["psnr"]) < float(rows[0]["psnr"])
    assert float(rows[2]["test_accuracy"]) < float(rows[0]["test_accuracy"])
    assert (out / "tradeoff.png").stat().st_size > 1000
    assert json.loads((out / "tradeoff.json").read_text())["param"] == "std"
    assert "| none |" in capsys.readouterr().out


def test_tradeoff_validates_every_strength():
    with pytest.raises(ConfigError, match="ratio"):
        TradeoffConfig(defense="pruning", strengths=(0.5, 1.5), experiment=ExperimentConfig(),
                       utility=UtilityConfig())
