"""gradleak's cache: trained models and timing choices, under ``$GRADLEAK_CACHE`` (default ``~/.cache/gradleak``).

Locally pre-trained models (no weights can be downloaded here) take minutes on a CPU, so they are trained once per
recipe and kept as safetensors (no pickles), named by a hash of everything that made them: model, data, steps,
seed and a version. Files are written atomically (write, then rename), so concurrent runs never read half a file,
and a file that does not load or does not fit the model is trained again rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def cache_dir() -> Path:
    """The cache root: ``$GRADLEAK_CACHE`` or ``~/.cache/gradleak``."""
    root = os.environ.get("GRADLEAK_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "gradleak")
    return Path(root)


def cached_weights(
    kind: str, recipe: dict[str, Any], train: Callable[[], dict[str, torch.Tensor]],
    expected: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The weights ``train()`` returns for ``recipe`` (JSON-serialisable), from ``cache_dir()/kind`` when there.

    ``expected`` (a state dict of the model) checks a cached file's names, shapes and dtypes before it is used."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    ident = json.dumps(recipe, sort_keys=True, default=str)
    path = cache_dir() / kind / f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}.safetensors"
    if path.is_file():
        try:
            weights = load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            weights = None
        if weights is not None and (expected is None or _fits(weights, expected)):
            return weights
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in train().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        save_file(weights, str(tmp), metadata={"recipe": ident})
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: the weights still serve this run
    return weights


def _fits(weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> bool:
    return set(weights) == set(expected) and all(
        weights[k].shape == expected[k].shape and weights[k].dtype == expected[k].dtype
        and bool(torch.isfinite(weights[k]).all() if weights[k].is_floating_point() else True)
        for k in expected
    )
