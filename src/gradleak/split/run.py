"""One split-learning leakage run written as a report folder (``gradleak split``): metrics.json and grid.png."""

from __future__ import annotations

import json
from pathlib import Path

from gradleak import limits
from gradleak.data import check_image_size, load_dataset
from gradleak.errors import ConfigError
from gradleak.metrics import Scores
from gradleak.report import save_grid
from gradleak.split.defenses import SplitDefense
from gradleak.split.inversion import unsplit_inversion, white_box_inversion
from gradleak.split.label_leakage import cosine_attack_scores, norm_attack_scores
from gradleak.split.model import SplitCNN
from gradleak.split.scoring import LabelLeakage, score_inversion, score_label_leakage
from gradleak.split.simulation import SplitRun, train_split


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


def _learning(run: SplitRun) -> dict:
    return {"test_accuracy": run.test_accuracy, "majority_accuracy": run.majority_accuracy,
            "errors_removed": run.errors_removed, "learned": run.learned}


def _inversion(scores: Scores) -> dict:
    m = scores.means()
    return {"psnr": m["psnr"], "ssim": m["ssim"], "best_baseline_psnr": m["best_baseline_psnr"],
            "best_baseline_ssim": m["best_baseline_ssim"], "leaked": m["leaked"],
            "reid_top1_pixels": m.get("reid_top1_pixels"), "verdict": scores.verdict()}


def _labels(leak: LabelLeakage) -> dict:
    return {"auc": leak.auc, "inferred_accuracy": leak.accuracy, "majority_accuracy": leak.majority,
            "leaked": leak.leaked}


def run_split(out: str | Path, dataset: str = "digits", size: int = 16, cut: int = 2, steps: int = 60,
              observe: int = 8, positive_class: int = 0, defense: SplitDefense = SplitDefense(),
              seed: int = 0) -> dict:
    """Train split learning, invert the smashed data (white box and UnSplit), measure label leakage on the binary
    task ``positive_class`` vs the rest; write ``metrics.json`` and ``grid.png`` under ``out``.

    Each network's test accuracy stands beside the majority class's (``learned``), each inversion beside the
    attacker's image guesses (best guess, leaked share), each label attack beside the majority class. Every
    argument is checked before any work, with the bounds of ``gradleak.limits`` (``--allow-large``)."""
    check_split_settings(size, cut, steps, observe)
    data = load_dataset(dataset, size=size, channels=1)
    if not 0 <= positive_class < data.num_classes:
        raise ConfigError(f"positive_class must be one of the {data.num_classes} classes of {data.name!r} "
                          f"(0..{data.num_classes - 1}), got {positive_class}")
    run = train_split(data, cut=cut, steps=steps, observe=observe, seed=seed, defense=defense)
    white = white_box_inversion(run.observation, seed=seed)
    unsplit = unsplit_inversion(run.observation, seed=seed)
    white_scores, unsplit_scores = score_inversion(run, white), score_inversion(run, unsplit)
    binary = train_split(data, cut=cut, steps=2 * steps + 30, positive_class=positive_class, observe=256,
                         seed=seed, defense=defense)
    y = binary.truth.labels
    returned = binary.observation.returned
    norm = score_label_leakage(binary, norm_attack_scores(returned))
    cosine = score_label_leakage(binary, cosine_attack_scores(returned, int((y == 1).nonzero()[0])))
    metrics = {
        "dataset": dataset, "cut": cut, "defense": defense.name, "seed": seed, "test_accuracy": run.test_accuracy,
        "white_box_psnr": white_scores.means()["psnr"], "unsplit_psnr": unsplit_scores.means()["psnr"],
        "binary_test_accuracy": binary.test_accuracy, "norm_auc": norm.auc, "cosine_auc": cosine.auc,
        "learning": _learning(run), "binary_learning": _learning(binary),
        "white_box": _inversion(white_scores), "unsplit": _inversion(unsplit_scores),
        "norm_attack": _labels(norm), "cosine_attack": _labels(cosine),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    save_grid([run.truth.inputs, white, unsplit], ["truth", "white box", "UnSplit"], out / "grid.png")
    return metrics
