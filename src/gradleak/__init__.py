"""gradleak: reconstruct private training data from shared gradients, and measure what stops it.

The public names below load on first use (PEP 562 ``__getattr__``): importing any ``gradleak`` module imports
this package first, and importing every public module here would cost each command-line call, ``--help``
included, the seconds that PyTorch, the attack zoo and their dependencies take to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "ATTACKS": "gradleak.attacks",
    "Attack": "gradleak.attacks",
    "Reconstruction": "gradleak.attacks",
    "infer_labels": "gradleak.attacks",
    "load_capture": "gradleak.capture",
    "load_truth": "gradleak.capture",
    "save_capture": "gradleak.capture",
    "save_truth": "gradleak.capture",
    "ImageDataset": "gradleak.data",
    "load_dataset": "gradleak.data",
    "Scores": "gradleak.metrics",
    "score": "gradleak.metrics",
    "build_model": "gradleak.models",
    "FeatureInput": "gradleak.inputs",
    "ImageInput": "gradleak.inputs",
    "TokenInput": "gradleak.inputs",
    "trust_model": "gradleak.model_spec",
    "GroundTruth": "gradleak.observation",
    "LocalTraining": "gradleak.observation",
    "ModelSpec": "gradleak.observation",
    "Observation": "gradleak.observation",
    "Recording": "gradleak.recorder",
    "record": "gradleak.recorder",
    "Task": "gradleak.training_task",
    "simulate": "gradleak.victim",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # the names as static tools see them; at run time they load in __getattr__
    from gradleak.attacks import ATTACKS, Attack, Reconstruction, infer_labels
    from gradleak.capture import load_capture, load_truth, save_capture, save_truth
    from gradleak.data import ImageDataset, load_dataset
    from gradleak.inputs import FeatureInput, ImageInput, TokenInput
    from gradleak.metrics import Scores, score
    from gradleak.model_spec import trust_model
    from gradleak.models import build_model
    from gradleak.observation import GroundTruth, LocalTraining, ModelSpec, Observation
    from gradleak.recorder import Recording, record
    from gradleak.training_task import Task
    from gradleak.victim import simulate


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradleak' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
