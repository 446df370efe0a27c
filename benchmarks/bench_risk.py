"""How well gradleak's risk score ranks updates by the PSNR an attack actually reaches, and what it costs.

Reads the held-out rows of ``benchmarks/data/risk_calibration.csv`` (seeds >= 1000: other images than the
calibration rows; regenerate with ``benchmarks/calibrate_risk.py``), scores them with the shipped
``gradleak/risk_model.json`` and prints the Spearman rank correlation (target >= 0.8). Then times the score
against one iDLG attack on a fresh update (lenet, batch 1, 32x32 faces).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_risk.py
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from gradleak.attacks import ATTACKS
from gradleak.experiment import ExperimentConfig, make_victim
from gradleak.risk import RiskModel, indicators

CSV_PATH = Path(__file__).resolve().parent / "data" / "risk_calibration.csv"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", type=Path, default=CSV_PATH)
    p.add_argument("--model-json", type=Path, default=None, help="risk model JSON (default: the shipped one)")
    p.add_argument("--iterations", type=int, default=100, help="iDLG iterations of the timed attack")
    p.add_argument("--repeats", type=int, default=20, help="timed risk scores")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = RiskModel.load(args.model_json)
    with args.csv.open() as f:
        rows = list(csv.DictReader(f))
    for split in ("calibration", "heldout"):
        part = [r for r in rows if r["split"] == split]
        predicted = [model.predict({k: float(v) for k, v in r.items() if k in model.coefficients}) for r in part]
        reached = [float(r["psnr"]) for r in part]
        rho = spearmanr(predicted, reached).statistic
        mae = sum(abs(a - b) for a, b in zip(predicted, reached)) / len(part)
        print(f"{split}: {len(part)} updates, Spearman {rho:.3f}, mean abs error {mae:.2f} dB")

    obs, _ = make_victim(ExperimentConfig(dataset="faces", image_size=32, model="lenet", batch_size=1, seed=7))
    net = obs.build_model("cpu")
    grads = obs.gradient_estimate()
    start = time.perf_counter()
    for _ in range(args.repeats):
        model.predict(indicators(grads, net, obs.batch_size, obs.num_classes))
    score_ms = (time.perf_counter() - start) * 1e3 / args.repeats
    attack = ATTACKS.build("idlg", iterations=args.iterations)
    start = time.perf_counter()
    attack.reconstruct(obs, device="cpu", seed=0)
    attack_ms = (time.perf_counter() - start) * 1e3
    print(f"cost per update (lenet, batch 1, 32x32, 1 thread): risk score {score_ms:.1f} ms, "
          f"iDLG {args.iterations} its {attack_ms:.0f} ms ({attack_ms / score_ms:.0f}x)")


if __name__ == "__main__":
    main()
