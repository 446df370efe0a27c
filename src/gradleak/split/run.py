"""One split-learning leakage run written as a report folder (``gradleak split``): metrics.json and grid.png."""

from __future__ import annotations

import json
from pathlib import Path

from gradleak import limits
from gradleak.data import check_image_size, load_dataset
from gradleak.errors import ConfigError
from gradleak.metrics import psnr
from gradleak.report import save_grid
from gradleak.split.defenses import SplitDefense
from gradleak.split.inversion import unsplit_inversion, white_box_inversion
from gradleak.split.model import SplitCNN
from gradleak.split.label_leakage import cosine_attack_scores, leakage_auc, norm_attack_scores
from gradleak.split.simulation import train_split


def check_split_settings(size: int, cut: int, steps: int, observe: int) -> None:
    """The run's sizes: an image side the split CNN halves twice, a cut it has, bounded steps and batch."""
    check_image_size(size, 1)
    if size % 4:
        raise ConfigError(f"image size must be a multiple of 4 (the split CNN halves it twice), got {size}")
    SplitCNN.check_cut(cut)
    if steps < 0:
        raise ConfigError(f"steps must be >= 0, got {steps}")
    limits.check("local_steps", 2 * steps + 30, "split training steps (2 x steps + 30 for the label task)")
    if observe < 1:
        raise ConfigError(f"observe must be >= 1, got {observe}")
    limits.check("batch_size", observe, "observed images (observe)")


def run_split(out: str | Path, dataset: str = "digits", size: int = 16, cut: int = 2, steps: int = 60,
              observe: int = 8, positive_class: int = 0, defense: SplitDefense = SplitDefense(),
              seed: int = 0) -> dict:
    """Train split learning, invert the smashed data (white box and UnSplit), measure label leakage on the binary
    task ``positive_class`` vs the rest; write ``metrics.json`` and ``grid.png`` under ``out``.

    Every argument is checked before any work, with the bounds of ``gradleak.limits`` (``--allow-large``)."""
    check_split_settings(size, cut, steps, observe)
    data = load_dataset(dataset, size=size, channels=1)
    if not 0 <= positive_class < data.num_classes:
        raise ConfigError(f"positive_class must be one of the {data.num_classes} classes of {data.name!r} "
                          f"(0..{data.num_classes - 1}), got {positive_class}")
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
