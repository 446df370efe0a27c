"""Capture files: one ``.safetensors`` file per observed update, readable without unpickling anything.

Layout (format ``gradleak.capture`` version 2):

- tensors ``weights/<name>`` (the server's state dict), ``update/<name>`` (the shared update: parameters and, from
  a client that sends its state dict, the change of its BatchNorm ``running_mean``/``running_var`` under their
  state-dict names) and, when the labels leaked, ``labels``; no other tensor names;
- the safetensors header's ``__metadata__`` holds one key, ``gradleak``, whose value is a JSON object with
  ``format``, ``version``, ``model`` (``source``: registry / import / huggingface, ``name``, ``kwargs``),
  ``inputs`` (``kind``: image / tokens / features and its description), ``task`` (``kind``, ``num_classes``),
  ``update_kind``, ``batch_size``, ``model_mode``, ``local_training`` (or null), ``info`` and ``update_digest``
  (SHA-256 of the update, the id its truth file carries).

Version 1 files (images only: ``input_shape``, ``mean``, ``std``, ``num_classes``, a registry ``model``) still load.
Ground truth, when a simulation knows it, goes to a separate file (format ``gradleak.truth``) so that a capture
handed to a red team carries nothing private; it names the capture it belongs to by ``update_digest``.

Reading validates the whole file before any work (``Observation.validate``): a model named by import path is built
only if the user trusted that very factory (``trust``), with settings bound to its signature; nothing else a file
names is ever imported or executed. The metadata JSON is read by ``gradleak.limits.parse_json`` (nesting bounded).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gradleak.errors import CaptureError, ConfigError
from gradleak.inputs import ImageInput, input_spec_from_json
from gradleak.limits import parse_json
from gradleak.model_spec import ModelSpec, trust_model
from gradleak.observation import GroundTruth, LocalTraining, Observation, update_digest
from gradleak.training_task import Task, task_from_json

CAPTURE_FORMAT = "gradleak.capture"
TRUTH_FORMAT = "gradleak.truth"
VERSION = 2
READABLE_VERSIONS = (1, 2)
_REQUIRED = {1: ("model", "update_kind", "input_shape", "batch_size", "num_classes", "mean", "std"),
             2: ("model", "inputs", "task", "update_kind", "batch_size")}
#: the metadata JSON is small; a header claiming more is not a capture
_MAX_METADATA_CHARS = 1 << 20


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CaptureError(f"{path} already exists; pass --force (force=True) to overwrite it")
    if path.is_dir():
        raise CaptureError(f"{path} is a directory, not a file")


def _tensors_for_file(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: tied weights share storage, which safetensors refuses; each entry becomes its own tensor
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def rebuild_problem(spec: ModelSpec, module: nn.Module | None = None) -> str | None:
    """Why ``module`` (default: the live module of a ``ModelSpec.from_module``) would not rebuild from what a
    capture stores of ``spec`` (a live module: its import path and settings), or ``None`` when it does: the rebuilt
    architecture must hold the module's every parameter and buffer, with the same shapes. Built on the ``meta``
    device: nothing is allocated."""
    module = module if module is not None else spec.template
    if module is None:
        return None
    call = f"{spec.name}(**{spec.kwargs})" if spec.kwargs else f"{spec.name}()"
    if spec.source == "huggingface":
        call = f"{spec.name} from its config"
    try:
        portable = spec if spec.source != "instance" else ModelSpec(spec.name, dict(spec.kwargs), source="import",
                                                                    trusted=True)
        with torch.device("meta"):
            rebuilt = portable.build()
    except (CaptureError, ConfigError) as exc:
        return f"{call} does not rebuild it ({exc})"
    want, got = _shapes(module), _shapes(rebuilt)
    for name, shape in want.items():
        if name not in got:
            return f"{call} builds no {name!r}"
        if got[name] != shape:
            return f"{call} builds {name!r} shaped {got[name]}, the model's is {shape}"
    if extra := [k for k in got if k not in want]:
        return f"{call} builds {extra[0]!r}, which the model lacks"
    return None


def save_capture(obs: Observation, path: str | Path, *, force: bool = True) -> Path:
    """Write ``obs`` to ``path`` (a ``.safetensors`` file); returns the path. ``force=False`` refuses to overwrite.
    A live module (``gradleak.record``) is saved as its import path and settings: refused when those would not
    rebuild it (``rebuild_problem``), since the capture would describe another model."""
    path = Path(path)
    if (problem := rebuild_problem(obs.model_spec)) is not None:
        raise CaptureError(f"model {type(obs.model_spec.template).__name__} cannot be saved in a capture: {problem}; "
                           f"record it with model_kwargs={{...}} (its constructor arguments), factory= or model_spec=")
    _refuse_existing(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _tensors_for_file({f"weights/{k}": v for k, v in obs.weights.items()})
    tensors.update(_tensors_for_file({f"update/{k}": v for k, v in obs.update.items()}))
    if obs.labels is not None:
        tensors["labels"] = obs.labels.detach().cpu().long().contiguous()
    lt = obs.local_training
    meta = {
        "format": CAPTURE_FORMAT,
        "version": VERSION,
        "model": obs.model_spec.to_json(),
        "inputs": obs.inputs.to_json(),
        "task": obs.task.to_json(),
        "update_kind": obs.update_kind,
        "batch_size": obs.batch_size,
        "model_mode": obs.model_mode,
        "local_training": None if lt is None else {"steps": lt.steps, "lr": lt.lr, "batch_size": lt.batch_size},
        "info": obs.info,
        "update_digest": update_digest(obs.update),
    }
    save_file(tensors, str(path), metadata={"gradleak": json.dumps(meta)})
    return path


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The header metadata and tensors of any safetensors file, or one ``CaptureError`` naming the file."""
    if not path.is_file():
        raise CaptureError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as exc:
        raise CaptureError(f"{path}: not a readable safetensors file ({exc})") from exc
    return header, tensors


def _read(path: Path, expected_format: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    header, tensors = read_safetensors(path)
    if "gradleak" not in header:
        raise CaptureError(f"{path}: safetensors file without gradleak metadata (expected a {expected_format} file)")
    if len(header["gradleak"]) > _MAX_METADATA_CHARS:
        raise CaptureError(f"{path}: gradleak metadata is over {_MAX_METADATA_CHARS} characters")
    meta = parse_json(header["gradleak"], f"{path}: gradleak metadata")
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CaptureError(f"{path}: expected format {expected_format!r}, found {got!r}")
    if meta.get("version") not in READABLE_VERSIONS or isinstance(meta.get("version"), bool):
        raise CaptureError(f"{path}: {expected_format} version {meta.get('version')!r} is not supported "
                           f"(readable: {', '.join(map(str, READABLE_VERSIONS))})")
    return meta, tensors


def _v1_description(meta: dict[str, Any]) -> tuple[ModelSpec, ImageInput, Task]:
    """Version 1 described images only, with a registry model."""
    model = meta["model"]
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise CaptureError("metadata 'model' must be an object with 'name' and 'kwargs'")
    for key in ("input_shape", "mean", "std"):
        if not isinstance(meta[key], list):
            raise CaptureError(f"metadata {key!r} must be a list, got {meta[key]!r}")
    spec = ModelSpec(model["name"], model.get("kwargs", {}), source="registry")
    return spec, ImageInput(tuple(meta["input_shape"]), tuple(meta["mean"]), tuple(meta["std"])), \
        Task.classification(meta["num_classes"])


def load_capture(path: str | Path, *, trust: Iterable[str] = ()) -> Observation:
    """Read and validate a capture; every problem raises ``CaptureError`` naming the file and the key.

    ``trust`` lists the factories (``pkg.mod:factory``, ``path/file.py:factory``) the user allows to run: a capture
    whose model is named by import path is refused unless that factory is trusted here or by
    ``gradleak.trust_model``; trusting a module alone trusts none of its functions."""
    path = Path(path)
    trust_model(*trust)
    meta, tensors = _read(path, CAPTURE_FORMAT)
    version = meta["version"]
    for key in _REQUIRED[version]:
        if key not in meta:
            raise CaptureError(f"{path}: metadata is missing key {key!r}")
    unknown = [k for k in tensors if not (k.startswith(("weights/", "update/")) or k == "labels")]
    if unknown:
        raise CaptureError(f"{path}: unexpected tensor {unknown[0]!r} (expected weights/*, update/* and labels)")
    weights = {k.removeprefix("weights/"): v for k, v in tensors.items() if k.startswith("weights/")}
    update = {k.removeprefix("update/"): v for k, v in tensors.items() if k.startswith("update/")}
    lt = meta.get("local_training")
    info = meta.get("info", {})
    try:
        if version == 1:
            spec, inputs, task = _v1_description(meta)
        else:
            spec, inputs, task = ModelSpec.from_json(meta["model"]), input_spec_from_json(meta["inputs"]), \
                task_from_json(meta["task"])
        if lt is not None and not isinstance(lt, dict):
            raise CaptureError(f"metadata 'local_training' must be an object or null, got {lt!r}")
        if not isinstance(info, dict):
            raise CaptureError(f"metadata 'info' must be an object, got {type(info).__name__}")
        obs = Observation(
            model_spec=spec,
            weights=weights,
            update=update,
            inputs=inputs,
            task=task,
            batch_size=meta["batch_size"],
            update_kind=meta["update_kind"],
            local_training=None if lt is None else LocalTraining(lt.get("steps"), lt.get("lr"), lt.get("batch_size")),
            labels=tensors.get("labels"),
            model_mode=meta.get("model_mode", "train"),
            info=dict(info),
        )
    except CaptureError as exc:
        raise CaptureError(f"{path}: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CaptureError(f"{path}: malformed metadata ({exc!r})") from exc
    digest = meta.get("update_digest")
    if digest is not None and digest != update_digest(update):
        raise CaptureError(f"{path}: the update does not match its recorded digest (file altered or damaged)")
    return obs


def capture_id(path: str | Path) -> str | None:
    """The ``update_digest`` a capture file records (``None`` for version 1 files)."""
    meta, _ = _read(Path(path), CAPTURE_FORMAT)
    digest = meta.get("update_digest")
    return digest if isinstance(digest, str) else None


def save_truth(truth: GroundTruth, path: str | Path, *, capture: Observation | None = None,
               force: bool = True) -> Path:
    """Write the ground truth; ``capture`` (the observation it belongs to) stamps it with the capture's id."""
    path = Path(path)
    _refuse_existing(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"inputs": truth.inputs.detach().cpu().contiguous()}
    if truth.labels is not None:
        tensors["labels"] = truth.labels.detach().cpu().long().contiguous()
    if truth.attention_mask is not None:
        tensors["attention_mask"] = truth.attention_mask.detach().cpu().long().contiguous()
    meta: dict[str, Any] = {"format": TRUTH_FORMAT, "version": VERSION}
    if capture is not None:
        meta["capture_id"] = update_digest(capture.update)
    save_file(tensors, str(path), metadata={"gradleak": json.dumps(meta)})
    return path


def load_truth(path: str | Path, *, capture: Observation | None = None) -> GroundTruth:
    """Read a truth file. With ``capture``, the truth must belong to it: same id (when both record one), same input
    kind and shape, labels and token ids in range."""
    path = Path(path)
    meta, tensors = _read(path, TRUTH_FORMAT)
    if "inputs" not in tensors:
        raise CaptureError(f"{path}: missing tensor 'inputs'")
    if meta["version"] == 1 and "labels" not in tensors:
        raise CaptureError(f"{path}: missing tensor 'labels'")
    inputs, labels = tensors["inputs"], tensors.get("labels")
    integer = not (inputs.dtype.is_floating_point or inputs.dtype.is_complex or inputs.dtype == torch.bool)
    if labels is not None and not (labels.dtype.is_floating_point or labels.dtype.is_complex
                                   or labels.dtype == torch.bool):
        labels = labels.long()
    try:
        truth = GroundTruth(inputs.float() if inputs.dtype.is_floating_point else inputs.long() if integer else inputs,
                            labels, tensors.get("attention_mask"))
        if capture is not None:
            recorded = meta.get("capture_id")
            if recorded is not None and recorded != update_digest(capture.update):
                raise CaptureError("this truth belongs to another capture (its capture_id differs)")
            truth.check_against(capture)
    except CaptureError as exc:
        raise CaptureError(f"{path}: {exc}") from exc
    return truth
