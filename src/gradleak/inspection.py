"""What a file holds, read without attacking and without running any model code (``gradleak inspect``).

A capture is summarised from its metadata and tensor headers: the model source (and whether building it would
import user code), the input description, the task, the update, and what leaked. A truth file, or a plain
weights/gradient file (safetensors, or PyTorch read with ``weights_only=True``), is listed tensor by tensor.
Every text taken from the file is shown with its non-printable characters escaped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gradleak.capture import CAPTURE_FORMAT, TRUTH_FORMAT, read_safetensors
from gradleak.errors import CaptureError
from gradleak.limits import parse_json
from gradleak.model_spec import is_trusted, split_import_path
from gradleak.tensor_files import load_tensors

_MAX_LISTED = 40


def _tensor_lines(tensors: dict[str, Any], prefix: str = "") -> list[str]:
    lines = [f"{name.removeprefix(prefix)}  {tuple(t.shape)}  {str(t.dtype).removeprefix('torch.')}"
             for name, t in tensors.items() if name.startswith(prefix)]
    if len(lines) > _MAX_LISTED:
        lines = lines[:_MAX_LISTED] + [f"... and {len(lines) - _MAX_LISTED} more"]
    return lines


def describe_file(path: str | Path) -> dict[str, Any]:
    """A summary of ``path``: a dict of printable fields; ``CaptureError`` when it is none of the readable kinds."""
    path = Path(path)
    header: dict[str, str] | None = None
    try:
        header, tensors = read_safetensors(path)
    except CaptureError:
        tensors = load_tensors(path, "tensor file")
    meta: dict[str, Any] = {}
    if header and "gradleak" in header:
        meta = parse_json(header["gradleak"], f"{path}: gradleak metadata")
        if not isinstance(meta, dict):
            raise CaptureError(f"{path}: gradleak metadata must be a JSON object")
    kind = meta.get("format")
    if kind == CAPTURE_FORMAT:
        summary = _describe_capture(path, meta, tensors)
    elif kind == TRUTH_FORMAT:
        summary = {"file": str(path), "kind": "ground truth (private: keep it away from the attacker)",
                   "belongs to capture": meta.get("capture_id", "unknown (version 1)"),
                   "tensors": _tensor_lines(tensors)}
    else:
        summary = {"file": str(path), "kind": "tensor file (weights or an update)", "entries": len(tensors),
                   "elements": sum(t.numel() for t in tensors.values()), "tensors": _tensor_lines(tensors)}
    return {key: _printable(value) for key, value in summary.items()}


def _printable(value: Any) -> Any:
    """Text from the file with every character a terminal would act on (controls, escapes, bidirectional
    overrides, line breaks) written as its Python escape, so a file cannot rewrite the lines of its own summary."""
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if not isinstance(value, str):
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def _describe_capture(path: Path, meta: dict[str, Any], tensors: dict[str, Any]) -> dict[str, Any]:
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    source = model.get("source", "registry")
    name = model.get("name")
    model_line = f"{name} ({source})"
    if source == "import" and isinstance(name, str):
        try:
            module, _ = split_import_path(name)
            model_line += f"; building it imports {module!r} and calls {name!r} " + (
                "(trusted)" if is_trusted(name) else f"(not trusted: attack with --trust-model {name})")
        except CaptureError as exc:
            model_line += f"; invalid import path ({exc})"
    if meta.get("version") == 1:
        inputs: Any = {"kind": "image", "shape": meta.get("input_shape"), "mean": meta.get("mean"),
                       "std": meta.get("std")}
        task: Any = {"kind": "classification", "num_classes": meta.get("num_classes")}
    else:
        inputs, task = meta.get("inputs"), meta.get("task")
    update = {k: v for k, v in tensors.items() if k.startswith("update/")}
    leaked = ["labels"] if "labels" in tensors else []
    return {
        "file": str(path),
        "kind": f"gradleak capture, version {meta.get('version')}",
        "model": model_line,
        "model settings": json.dumps(model.get("kwargs", {}))[:300],
        "inputs": json.dumps(inputs),
        "task": json.dumps(task),
        "update": f"{meta.get('update_kind')} of {len(update)} tensors, "
                  f"{sum(t.numel() for t in update.values())} elements, batch size {meta.get('batch_size')}",
        "local training": json.dumps(meta.get("local_training")),
        "model mode": meta.get("model_mode", "train"),
        "leaked besides the update": ", ".join(leaked) or "nothing",
        "update digest": meta.get("update_digest", "none (version 1)"),
        "info": json.dumps(meta.get("info", {}))[:300],
        "update tensors": _tensor_lines(tensors, "update/"),
    }
