"""Write one run's report to a folder: ``grid.png``, ``trace.png``, ``reconstruction.safetensors``, ``metrics.json``.

``metrics.json`` schema ``gradleak.metrics`` version 1 (stable; new keys may be added, none removed)::

    {
      "schema": "gradleak.metrics", "version": 1,
      "attack": {"name": str, "settings": {...}},
      "observation": {"model": str, "batch_size": int, "update_kind": str, "input_shape": [C, H, W], ...},
      "mean": {"psnr": float|null, "ssim": float|null, "mse": float|null, "label_accuracy": float|null,
               "best_baseline_psnr": float|null, "best_baseline_ssim": float|null, "leaked": float|null,
               "reid_top1_pixels": float (with a public set), "reid_top1_features": float (with a feature model)},
      "per_sample": {"psnr": [..], "ssim": [..], "mse": [..], "label_correct": [..]|null,
                     "true_label": [..]|null, "recovered_label": [..]|null, "assignment": [..],
                     "leaked": [bool]|null},
      "baselines": {"psnr": {guess: [..]}, "ssim": {guess: [..]}, "best_psnr": [..], "best_ssim": [..],
                    "label_accuracy": float|null, "mean": {guess: {"psnr", "ssim"}}} | null,
      "margins": {"psnr_db": float, "ssim": float, "rouge1": float},
      "reidentification": {space: {"space", "ranks": [..], "lineup": int, "top1": float, "chance": float}},
      "verdict": str,
      "iterations": int, "best_restart": int, "restart_objectives": [..], "final_objective": float|null,
      "wall_time_s": float, "details": {...attack-specific findings, e.g. "recovered": [bool]},
      "seed": int|null, "device": str, "versions": {"gradleak": str, "torch": str}
    }

Without ground truth (a real capture) the score fields are null and only the reconstruction is shown.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from gradleak import __version__
from gradleak.attacks.base import Reconstruction
from gradleak.baselines import Margins
from gradleak.metrics import Scores
from gradleak.observation import GroundTruth, Observation
from gradleak.outputs import check_out_dir, clear_stale
from gradleak.report.grid import save_grid, save_trace_plot

SCHEMA = "gradleak.metrics"
SCHEMA_VERSION = 1
#: every file ``write_report`` may write; all are removed from a reused folder first
RUN_FILES = ("grid.png", "trace.png", "reconstruction.safetensors", "metrics.json", "report.html")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def metrics_dict(
    obs: Observation,
    recon: Reconstruction,
    scores: Scores | None,
    truth: GroundTruth | None,
    *,
    seed: int | None,
    device: str,
) -> dict[str, Any]:
    means: dict[str, float | None] = {"psnr": None, "ssim": None, "mse": None, "label_accuracy": None}
    per_sample: dict[str, Any] = {k: None for k in ("psnr", "ssim", "mse", "label_correct", "assignment", "leaked")}
    judged: dict[str, Any] = {"baselines": None, "margins": asdict(Margins()), "reidentification": {},
                              "verdict": "no ground truth: not scored"}
    if scores is not None:
        means = {k: (None if v is None else _finite(v)) for k, v in scores.means().items()}
        per_sample = {
            "psnr": [_finite(v) for v in scores.psnr],
            "ssim": scores.ssim,
            "mse": scores.mse,
            "label_correct": scores.label_correct,
            "assignment": scores.assignment,
            "leaked": scores.leaked,
        }
        judged = {"baselines": None if scores.baselines is None else scores.baselines.to_json(),
                  "margins": asdict(scores.margins),
                  "reidentification": {k: r.to_json() for k, r in scores.reidentification.items()},
                  "verdict": scores.verdict()}
    per_sample["true_label"] = None if truth is None or truth.labels is None else truth.labels.tolist()
    per_sample["recovered_label"] = None if recon.labels is None else recon.labels.tolist()
    final = float(recon.restart_objectives[recon.best_restart]) if recon.restart_objectives.numel() else None
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "attack": {"name": recon.attack, "settings": recon.settings},
        "observation": {
            "model": obs.model_spec.name,
            "model_kwargs": obs.model_spec.kwargs,
            "batch_size": obs.batch_size,
            "update_kind": obs.update_kind,
            "input_shape": list(obs.input_shape),
            "num_classes": obs.task.num_classes,
            "model_source": obs.model_spec.source,
            "inputs": obs.inputs.to_json(),
            "task": obs.task.to_json(),
            "info": obs.info,
        },
        "mean": means,
        "per_sample": per_sample,
        **judged,
        "iterations": recon.iterations,
        "best_restart": recon.best_restart,
        "restart_objectives": [_finite(float(v)) for v in recon.restart_objectives],
        "final_objective": None if final is None else _finite(final),
        "wall_time_s": recon.wall_time_s,
        "details": recon.details,
        "seed": seed,
        "device": device,
        "versions": {"gradleak": __version__, "torch": torch.__version__},
    }


def write_report(
    out: str | Path,
    obs: Observation,
    recon: Reconstruction,
    scores: Scores | None = None,
    truth: GroundTruth | None = None,
    *,
    seed: int | None = None,
    device: str = "cpu",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the report files into ``out`` and return the metrics dictionary (``extra`` keys merged in)."""
    out = Path(out)
    check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    clear_stale(out, RUN_FILES)  # a reused folder must not show an earlier run's grid or trace beside this one
    if obs.inputs.kind != "image":
        pass  # token sequences and feature vectors have their own views (text report, metrics)
    elif truth is not None and scores is not None:
        matched = recon.inputs[scores.assignment]
        captions = [
            [f"label {int(v)}" for v in truth.labels],
            [f"{p:.1f} dB" for p in scores.psnr],
        ]
        save_grid([truth.inputs, matched], ["truth", recon.attack], out / "grid.png", captions)
    else:
        save_grid([recon.inputs], [recon.attack], out / "grid.png")
    if recon.trace.numel():
        save_trace_plot(recon.trace, out / "trace.png")
    tensors = {"inputs": recon.inputs.contiguous()}
    if recon.labels is not None:
        tensors["labels"] = recon.labels.long().contiguous()
    save_file(tensors, str(out / "reconstruction.safetensors"))
    metrics = {**metrics_dict(obs, recon, scores, truth, seed=seed, device=device), **(extra or {})}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
