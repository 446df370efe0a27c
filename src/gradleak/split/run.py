"""One split-learning leakage run written as a report folder (``gradleak split``): metrics.json and grid.png."""

from __future__ import annotations

import json
from pathlib import Path

from gradleak.data import load_dataset
from gradleak.metrics import psnr
from gradleak.report import save_grid
from gradleak.split.defenses import SplitDefense
from gradleak.split.inversion import unsplit_inversion, white_box_inversion
from gradleak.split.label_leakage import cosine_attack_scores, leakage_auc, norm_attack_scores
from gradleak.split.simulation import train_split


def run_split(out: str | Path, dataset: str = "digits", size: int = 16, cut: int = 2, steps: int = 60,
              observe: int = 8, positive_class: int = 0, defense: SplitDefense = SplitDefense(),
              seed: int = 0) -> dict:
    """Train split learning, invert the smashed data (white box and UnSplit), measure label leakage on the binary
    task ``positive_class`` vs the rest; write ``metrics.json`` and ``grid.png`` under ``out``."""
    data = load_dataset(dataset, size=size, channels=1)
    run = train_split(data, cut=cut, steps=steps, observe=observe, seed=seed, defense=defense)
    white = white_box_inversion(run.observation, seed=seed)
    unsplit = unsplit_inversion(run.observation, seed=seed)
    binary = train_split(data, cut=cut, steps=2 * steps + 30, positive_class=positive_class, observe=256,
                         seed=seed, defense=defense)
    y = binary.truth.labels
    returned = binary.observation.returned
    metrics = {
        "dataset": dataset, "cut": cut, "defense": defense.name, "seed": seed, "test_accuracy": run.test_accuracy,
        "white_box_psnr": float(psnr(white, run.truth.inputs).mean()),
        "unsplit_psnr": float(psnr(unsplit, run.truth.inputs).mean()),
        "binary_test_accuracy": binary.test_accuracy,
        "norm_auc": leakage_auc(norm_attack_scores(returned), y),
        "cosine_auc": leakage_auc(cosine_attack_scores(returned, int((y == 1).nonzero()[0])), y),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_grid([run.truth.inputs, white, unsplit], ["truth", "white box", "UnSplit"], out / "grid.png")
    return metrics
