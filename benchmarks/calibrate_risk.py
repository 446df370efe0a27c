"""Calibrate gradleak's leakage risk score: run iDLG on a sweep of updates, fit the indicators to the PSNR reached.

The sweep crosses models (lenet, mlp, convnet width 4), batch sizes, training stages (``pretrain_steps``) and
defenses (none, gaussian noise, pruning) on the bundled faces images at 32x32, drawing ``--runs`` grid points at
random. Rows with seed < 1000 are the calibration part, ``--heldout`` further rows with seeds >= 1000 (so other
images) are the held-out part ``benchmarks/bench_risk.py`` scores. Writes the CSV and the fitted JSON model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/calibrate_risk.py            # ~5 min on one core
    .venv/bin/python benchmarks/calibrate_risk.py --runs 20 --heldout 10 --iterations 50   # quicker
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import torch

from gradleak.experiment import ExperimentConfig, run_experiment
from gradleak.risk import FEATURES, RiskModel, indicators

ROOT = Path(__file__).resolve().parents[1]
CSV_PATH = ROOT / "benchmarks" / "data" / "risk_calibration.csv"
JSON_PATH = ROOT / "src" / "gradleak" / "risk_model.json"

MODELS = {"lenet": {}, "mlp": {}, "convnet": {"width": 4}}
BATCHES = (1, 1, 2, 4, 8)
STAGES = (0, 0, 30)
DEFENSES = ((None, {}), (None, {}), ("gaussian", {"std": 1e-2}), ("gaussian", {"std": 1e-1}), ("pruning", {"ratio": 0.9}))


def grid_point(rng: random.Random, seed: int) -> ExperimentConfig:
    model = rng.choice(sorted(MODELS))
    defense, kwargs = rng.choice(DEFENSES)
    return ExperimentConfig(dataset="faces", image_size=32, model=model, model_kwargs=MODELS[model],
                            batch_size=rng.choice(BATCHES), pretrain_steps=rng.choice(STAGES), attack="idlg",
                            attack_kwargs={"iterations": ITERATIONS}, defense=defense, defense_kwargs=kwargs,
                            seed=seed)


ITERATIONS = 100
#: PSNR above this is an exact recovery however high (an MLP's batch-1 update gives ~140 dB); capped so that a
#: few exact recoveries do not dominate the least-squares fit
PSNR_CAP = 50.0


def run_row(config: ExperimentConfig) -> dict[str, object]:
    result = run_experiment(config)
    obs = result.observation
    start = time.perf_counter()
    values = indicators(obs.gradient_estimate(), obs.build_model("cpu"), obs.batch_size, obs.num_classes)
    score_ms = (time.perf_counter() - start) * 1e3
    return {"model": config.model, "batch_size": config.batch_size, "pretrain_steps": config.pretrain_steps,
            "defense": f"{config.defense}:{config.defense_kwargs}" if config.defense else "none",
            "seed": config.seed, **values, "psnr": result.scores.means()["psnr"], "indicator_ms": score_ms}


def fit(rows: list[dict[str, object]]) -> RiskModel:
    """Least squares on the indicator subset with the best 5-fold cross-validated Spearman correlation on the
    calibration rows alone (the held-out rows play no part); indicators left out get coefficient 0."""
    import itertools

    import numpy as np
    from scipy.stats import spearmanr
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, cross_val_predict

    y = np.array([min(float(r["psnr"]), PSNR_CAP) for r in rows])
    best: tuple[float, tuple[str, ...]] = (-2.0, FEATURES)
    for n in range(2, len(FEATURES) + 1):
        for subset in itertools.combinations(FEATURES, n):
            x = np.array([[float(r[f]) for f in subset] for r in rows])
            pred = cross_val_predict(LinearRegression(), x, y, cv=KFold(5, shuffle=True, random_state=0))
            rho = float(spearmanr(pred, y).statistic)
            if rho > best[0]:
                best = (rho, subset)
    rho, subset = best
    x = np.array([[float(r[f]) for f in subset] for r in rows])
    reg = LinearRegression().fit(x, y)
    coefficients = {f: 0.0 for f in FEATURES}
    coefficients.update({f: float(c) for f, c in zip(subset, reg.coef_)})
    return RiskModel(coefficients, float(reg.intercept_), floor=float(y.min()), ceiling=float(y.max()),
                     info={"fitted_on": len(rows), "r2": float(reg.score(x, y)), "cv_spearman": rho,
                           "indicators": list(subset), "psnr_cap": PSNR_CAP,
                           "attack": f"idlg, {ITERATIONS} L-BFGS iterations",
                           "command": "benchmarks/calibrate_risk.py"})


def main() -> None:
    global ITERATIONS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=40, help="calibration rows (seeds 0..)")
    p.add_argument("--heldout", type=int, default=20, help="held-out rows (seeds 1000..)")
    p.add_argument("--iterations", type=int, default=100, help="iDLG L-BFGS iterations")
    p.add_argument("--csv", type=Path, default=CSV_PATH)
    p.add_argument("--model-json", type=Path, default=JSON_PATH)
    p.add_argument("--fit-only", action="store_true", help="refit the JSON model from the existing CSV")
    args = p.parse_args()
    ITERATIONS = args.iterations
    if args.fit_only:
        with args.csv.open() as f:
            rows = list(csv.DictReader(f))
        model = fit([r for r in rows if r["split"] == "calibration"])
        args.model_json.write_text(model.to_json() + "\n", encoding="utf-8")
        print(f"wrote {args.model_json}; calibration R^2 {model.info['r2']:.3f}")
        return
    torch.set_num_threads(1)
    rng = random.Random(0)
    rows = []
    for i in range(args.runs + args.heldout):
        seed = i if i < args.runs else 1000 + i
        config = grid_point(rng, seed)
        try:
            row = run_row(config)
        except ValueError as err:  # the attack diverged to NaN: no PSNR to fit, say so and go on
            print(f"{i + 1}: skipped {config.model} B={config.batch_size} seed={seed}: {err}", flush=True)
            continue
        row["split"] = "calibration" if i < args.runs else "heldout"
        rows.append(row)
        print(f"{i + 1}/{args.runs + args.heldout} {row['model']} B={row['batch_size']} pre={row['pretrain_steps']} "
              f"{row['defense']} psnr={row['psnr']:.2f}", flush=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    model = fit([r for r in rows if r["split"] == "calibration"])
    args.model_json.write_text(model.to_json() + "\n", encoding="utf-8")
    print(f"wrote {args.csv} and {args.model_json}; calibration R^2 {model.info['r2']:.3f}")


if __name__ == "__main__":
    main()
