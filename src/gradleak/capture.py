"""Capture files: one ``.safetensors`` file per observed update, readable without unpickling anything.

Layout (format ``gradleak.capture`` version 1):

- tensors ``weights/<name>`` (the server's state dict), ``update/<name>`` (the shared update) and,
  when the labels leaked, ``labels``;
- the safetensors header's ``__metadata__`` holds one key, ``gradleak``, whose value is a JSON object with
  ``format``, ``version``, ``model`` (``name``, ``kwargs``), ``update_kind``, ``input_shape``,
  ``batch_size``, ``num_classes``, ``mean``, ``std``, ``model_mode``, ``local_training`` (or null) and ``info``.

Ground truth, when a simulation knows it, goes to a separate file (format ``gradleak.truth``) so that a
capture handed to a red team carries nothing private.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gradleak.errors import CaptureError
from gradleak.observation import GroundTruth, LocalTraining, ModelSpec, Observation

CAPTURE_FORMAT = "gradleak.capture"
TRUTH_FORMAT = "gradleak.truth"
VERSION = 1
_REQUIRED = ("model", "update_kind", "input_shape", "batch_size", "num_classes", "mean", "std")


def save_capture(obs: Observation, path: str | Path) -> Path:
    """Write ``obs`` to ``path`` (a ``.safetensors`` file); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"weights/{k}": v.detach().cpu().contiguous() for k, v in obs.weights.items()}
    tensors.update({f"update/{k}": v.detach().cpu().contiguous() for k, v in obs.update.items()})
    if obs.labels is not None:
        tensors["labels"] = obs.labels.detach().cpu().long().contiguous()
    lt = obs.local_training
    meta = {
        "format": CAPTURE_FORMAT,
        "version": VERSION,
        "model": {"name": obs.model_spec.name, "kwargs": obs.model_spec.kwargs},
        "update_kind": obs.update_kind,
        "input_shape": list(obs.input_shape),
        "batch_size": obs.batch_size,
        "num_classes": obs.num_classes,
        "mean": list(obs.mean),
        "std": list(obs.std),
        "model_mode": obs.model_mode,
        "local_training": None if lt is None else {"steps": lt.steps, "lr": lt.lr, "batch_size": lt.batch_size},
        "info": obs.info,
    }
    save_file(tensors, str(path), metadata={"gradleak": json.dumps(meta)})
    return path


def _read(path: Path, expected_format: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise CaptureError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CaptureError(f"{path}: not a readable safetensors file ({exc})") from exc
    if "gradleak" not in header:
        raise CaptureError(f"{path}: safetensors file without gradleak metadata (expected a {expected_format} file)")
    try:
        meta = json.loads(header["gradleak"])
    except json.JSONDecodeError as exc:
        raise CaptureError(f"{path}: gradleak metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CaptureError(f"{path}: expected format {expected_format!r}, found {got!r}")
    if meta.get("version") != VERSION:
        raise CaptureError(f"{path}: {expected_format} version {meta.get('version')!r} is not supported (need {VERSION})")
    return meta, tensors


def load_capture(path: str | Path) -> Observation:
    """Read and validate a capture; every problem raises ``CaptureError`` naming the file and the key."""
    path = Path(path)
    meta, tensors = _read(path, CAPTURE_FORMAT)
    for key in _REQUIRED:
        if key not in meta:
            raise CaptureError(f"{path}: metadata is missing key {key!r}")
    model = meta["model"]
    if not isinstance(model, dict) or "name" not in model:
        raise CaptureError(f"{path}: metadata 'model' must be an object with 'name' and 'kwargs'")
    weights = {k.removeprefix("weights/"): v for k, v in tensors.items() if k.startswith("weights/")}
    update = {k.removeprefix("update/"): v for k, v in tensors.items() if k.startswith("update/")}
    lt = meta.get("local_training")
    try:
        return Observation(
            model_spec=ModelSpec(str(model["name"]), dict(model.get("kwargs", {}))),
            weights=weights,
            update=update,
            input_shape=tuple(int(s) for s in meta["input_shape"]),  # type: ignore[arg-type]
            batch_size=int(meta["batch_size"]),
            num_classes=int(meta["num_classes"]),
            mean=tuple(float(m) for m in meta["mean"]),
            std=tuple(float(s) for s in meta["std"]),
            update_kind=meta["update_kind"],
            local_training=None if lt is None else LocalTraining(int(lt["steps"]), float(lt["lr"]), int(lt["batch_size"])),
            labels=tensors.get("labels"),
            model_mode=meta.get("model_mode", "train"),
            info=dict(meta.get("info", {})),
        )
    except CaptureError as exc:
        raise CaptureError(f"{path}: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CaptureError(f"{path}: malformed metadata ({exc!r})") from exc


def save_truth(truth: GroundTruth, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"inputs": truth.inputs.detach().cpu().contiguous(), "labels": truth.labels.detach().cpu().long()}
    save_file(tensors, str(path), metadata={"gradleak": json.dumps({"format": TRUTH_FORMAT, "version": VERSION})})
    return path


def load_truth(path: str | Path) -> GroundTruth:
    path = Path(path)
    _, tensors = _read(path, TRUTH_FORMAT)
    for key in ("inputs", "labels"):
        if key not in tensors:
            raise CaptureError(f"{path}: missing tensor {key!r}")
    try:
        return GroundTruth(tensors["inputs"].float(), tensors["labels"].long())
    except CaptureError as exc:
        raise CaptureError(f"{path}: {exc}") from exc
