"""A red team's own files: weights and gradients as a mapping from parameter names to tensors.

An update file may also hold the change of the BatchNorm running statistics (``running_mean``/``running_var``
under their state-dict names), as the state dict a FedAvg client sends gives it: validated like the parameters,
kept out of the gradient, and read by the attacks' BN prior (``attacks.bn_statistics``).

Two formats are read, neither of which can run code: safetensors, and PyTorch files through
``torch.load(weights_only=True)`` (tensors and plain containers only; anything else is refused by PyTorch's
restricted unpickler), whatever the file's name says. Only dense, real tensors in CPU memory are accepted (a
sparse, ``meta``, complex or quantized entry is one error naming the file and the key). A file may hold the mapping
itself or wrap it once (``{"state_dict": {...}}``, Lightning and many training scripts do). Names lose wrapper
prefixes (``_module.`` from Opacus, ``module.`` from DataParallel/DDP) so they match the plain model.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError

from gradleak.capture import read_safetensors
from gradleak.errors import CaptureError
from gradleak.observation import Observation, check_plain_tensor
from gradleak.recorder import strip_prefix

if TYPE_CHECKING:
    from gradleak.inputs import InputSpec
    from gradleak.model_spec import ModelSpec
    from gradleak.observation import LocalTraining
    from gradleak.training_task import Task

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "gradients", "grads", "update", "weights")
MAX_FILE_BYTES = 16 * 1024**3


def load_tensors(path: str | Path, what: str = "tensor file") -> dict[str, torch.Tensor]:
    """``{name: tensor}`` from a safetensors or PyTorch file; one ``CaptureError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such {what}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CaptureError(f"{path}: {what} is larger than {MAX_FILE_BYTES} bytes")
    with path.open("rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        data = _torch_file(path, what)
    else:
        _, data = read_safetensors(path)
    return _flatten(data, path, what)


def _torch_file(path: Path, what: str) -> object:
    # an open file, not the path: given a path ending in .safetensors, torch.load hands it to safetensors instead
    try:
        with path.open("rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says what matters
            return torch.load(fh, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile,
            AttributeError, TypeError, SafetensorError, ImportError, IndexError, KeyError) as exc:
        raise CaptureError(f"{path}: not a tensor-only PyTorch {what} (loaded with weights_only=True: "
                           f"{_load_failure(exc)})") from exc


def _load_failure(exc: BaseException) -> str:
    """What ``torch.load`` refused, on one line: for the restricted unpickler, its reason (``Unsupported operand
    149``, ``Unsupported global: ...``), not its advice to load the file again without the restriction."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return " ".join(text.split())[:300] or type(exc).__name__


def _flatten(data: object, path: Path, what: str) -> dict[str, torch.Tensor]:
    if isinstance(data, dict) and len(data) == 1:
        (key, inner), = data.items()
        if key in _WRAPPER_KEYS and isinstance(inner, dict):
            data = inner
    if not isinstance(data, dict) or not data:
        raise CaptureError(f"{path}: a {what} must hold a non-empty mapping from parameter names to tensors, "
                           f"got {type(data).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise CaptureError(f"{path}: {what} key {key!r} is not a string")
        check_plain_tensor(value, f"{path}: {what} entry {key!r}")
        name = strip_prefix(key)
        if name in out:
            raise CaptureError(f"{path}: {what} holds {name!r} twice (with and without a wrapper prefix)")
        out[name] = value
    return out


def observation_from_files(
    model_spec: "ModelSpec",
    weights: str | Path,
    update: str | Path,
    *,
    inputs: "InputSpec",
    task: "Task",
    batch_size: int,
    update_kind: str = "gradient",
    local_training: "LocalTraining | None" = None,
    model_mode: str = "train",
    labels: torch.Tensor | None = None,
) -> "Observation":
    """An Observation from a red team's weights file and update file plus the input description they know."""
    weights_t = load_tensors(weights, "weights file")
    update_t = load_tensors(update, "update file")
    try:
        return Observation(model_spec=model_spec, weights=weights_t, update=update_t, inputs=inputs, task=task,
                           batch_size=batch_size, update_kind=update_kind,  # type: ignore[arg-type]
                           local_training=local_training, labels=labels, model_mode=model_mode,  # type: ignore[arg-type]
                           info={"weights_file": str(weights), "update_file": str(update)})
    except CaptureError as exc:
        raise CaptureError(f"{update} / {weights}: {exc}") from exc
