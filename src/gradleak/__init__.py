"""gradleak: reconstruct private training data from shared gradients, and measure what stops it."""

from __future__ import annotations

__version__ = "0.1.0"

from gradleak.attacks import ATTACKS, Attack, Reconstruction, infer_labels  # noqa: E402
from gradleak.capture import load_capture, load_truth, save_capture, save_truth  # noqa: E402
from gradleak.data import ImageDataset, load_dataset  # noqa: E402
from gradleak.metrics import Scores, score  # noqa: E402
from gradleak.models import build_model  # noqa: E402
from gradleak.inputs import FeatureInput, ImageInput, TokenInput  # noqa: E402
from gradleak.model_spec import trust_model  # noqa: E402
from gradleak.observation import GroundTruth, LocalTraining, ModelSpec, Observation  # noqa: E402
from gradleak.record import Recording, record  # noqa: E402
from gradleak.tasks import Task  # noqa: E402
from gradleak.victim import simulate  # noqa: E402

__all__ = [
    "ATTACKS",
    "Attack",
    "FeatureInput",
    "GroundTruth",
    "ImageDataset",
    "ImageInput",
    "LocalTraining",
    "ModelSpec",
    "Observation",
    "Reconstruction",
    "Recording",
    "Scores",
    "Task",
    "TokenInput",
    "build_model",
    "infer_labels",
    "load_capture",
    "load_dataset",
    "load_truth",
    "record",
    "save_capture",
    "save_truth",
    "score",
    "simulate",
    "trust_model",
]
