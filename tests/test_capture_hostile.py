"""Captures from strangers: validated whole before any work, tied to their truth, fuzzed with Hypothesis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from gradleak.capture import load_capture, load_truth, save_capture, save_truth
from gradleak.data import load_dataset
from gradleak.errors import CaptureError, GradleakError
from gradleak.inputs import FeatureInput
from gradleak.observation import GroundTruth, ModelSpec, Observation
from gradleak.victim import simulate

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def digit_capture(tmp_path_factory) -> tuple[Path, dict, dict, GroundTruth]:
    x, y = load_dataset("digits").batch([7])
    spec = ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 32})
    obs, truth = simulate(spec, x, y, num_classes=10, mean=(0.5,), std=(0.25,), seed=0)
    path = save_capture(obs, tmp_path_factory.mktemp("cap") / "c.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["gradleak"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return path, meta, tensors, truth


def _write(path: Path, meta: dict, tensors: dict) -> Path:
    save_file(tensors, str(path), metadata={"gradleak": json.dumps(meta)})
    return path


# -- class 1: every field and tensor checked before any work ---------------------------------------------------
@pytest.mark.parametrize("key, value, message", [
    ("batch_size", 1.7, "batch_size must be a positive integer"),
    ("batch_size", True, "batch_size must be a positive integer"),
    ("model_mode", "sideways", "model_mode must be 'train' or 'eval'"),
    ("inputs", {"kind": "image", "shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3},
     "do not fit model 'lenet'"),
    ("inputs", {"kind": "image", "shape": [1, 32, 32], "mean": [0.5], "std": [0.0]}, "std .* positive numbers"),
    ("inputs", {"kind": "image", "shape": [1, 32, 32], "mean": [math.nan], "std": [0.25]}, "finite numbers"),
    ("task", {"kind": "classification", "num_classes": 7}, "does not fit num_classes = 7"),
    ("update_kind", "weight_delta", "needs local_training"),
])
def test_bad_metadata_is_named(digit_capture, tmp_path: Path, key: str, value, message: str) -> None:
    _, meta, tensors, _ = digit_capture
    path = _write(tmp_path / "bad.safetensors", {**meta, key: value}, tensors)
    with pytest.raises(CaptureError, match=message):
        load_capture(path)


def test_local_training_needs_a_finite_positive_lr(digit_capture, tmp_path: Path) -> None:
    _, meta, tensors, _ = digit_capture
    for lr in (0.0, -1.0, "0.1", None):
        bad = {**meta, "update_kind": "weight_delta", "local_training": {"steps": 1, "lr": lr, "batch_size": 1}}
        with pytest.raises(CaptureError, match="finite lr > 0"):
            load_capture(_write(tmp_path / "lr.safetensors", bad, tensors))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_non_floating_update_is_refused_not_cast(digit_capture, tmp_path: Path, dtype: torch.dtype) -> None:
    _, meta, tensors, _ = digit_capture
    bad = dict(tensors)
    bad["update/features.0.bias"] = torch.ones_like(tensors["update/features.0.bias"]).to(dtype)
    meta = {k: v for k, v in meta.items() if k != "update_digest"}
    with pytest.raises(CaptureError, match=r"update tensor 'features.0.bias' has dtype .*floating-point"):
        load_capture(_write(tmp_path / "d.safetensors", meta, bad))


def test_weights_are_validated_like_the_update(digit_capture, tmp_path: Path) -> None:
    _, meta, tensors, _ = digit_capture
    bad = dict(tensors)
    w = tensors["weights/features.0.weight"].clone()
    w[0, 0, 0, 0] = math.inf
    bad["weights/features.0.weight"] = w
    with pytest.raises(CaptureError, match="weights tensor 'features.0.weight' contains NaN or Inf"):
        load_capture(_write(tmp_path / "w.safetensors", meta, bad))
    bad["weights/features.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(CaptureError, match=r"weights tensor 'features.0.weight' has shape \(3, 3\)"):
        load_capture(_write(tmp_path / "w.safetensors", meta, bad))


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([10]), r"leaked labels must lie in \[0, 10\)"),
    (torch.tensor([-1]), r"leaked labels must lie in \[0, 10\)"),
    (torch.tensor([0.5]), "leaked labels must be an integer tensor"),
])
def test_leaked_labels_are_integers_in_range(digit_capture, tmp_path: Path, labels, message: str) -> None:
    _, meta, tensors, _ = digit_capture
    with pytest.raises(CaptureError, match=message):
        load_capture(_write(tmp_path / "l.safetensors", meta, {**tensors, "labels": labels}))


def test_unexpected_tensor_and_altered_update_are_refused(digit_capture, tmp_path: Path) -> None:
    _, meta, tensors, _ = digit_capture
    with pytest.raises(CaptureError, match="unexpected tensor 'payload'"):
        load_capture(_write(tmp_path / "u.safetensors", meta, {**tensors, "payload": torch.zeros(1)}))
    altered = {**tensors, "update/features.0.bias": tensors["update/features.0.bias"] * 2}
    with pytest.raises(CaptureError, match="does not match its recorded digest"):
        load_capture(_write(tmp_path / "a.safetensors", meta, altered))


# -- class 2: what metadata can make us allocate -------------------------------------------------------------
def test_allocation_limits_and_the_override(digit_capture, tmp_path: Path) -> None:
    from gradleak.limits import allow_large

    _, meta, tensors, _ = digit_capture
    with pytest.raises(CaptureError, match="batch_size is 100000, above the limit .* --allow-large"):
        load_capture(_write(tmp_path / "b.safetensors", {**meta, "batch_size": 100_000}, tensors))
    huge = {**meta, "model": {"source": "registry", "name": "lenet",
                              "kwargs": {"in_channels": 1, "num_classes": 10, "image_size": 2**20}}}
    with pytest.raises(CaptureError, match="parameter count is .* above the limit"):
        load_capture(_write(tmp_path / "m.safetensors", huge, tensors))
    with pytest.raises(CaptureError, match="num_classes is 1099511627776, above the limit"):
        load_capture(_write(tmp_path / "k.safetensors", {**meta, "task": {"kind": "classification",
                                                                          "num_classes": 2**40}}, tensors))
    with allow_large():  # lifted: the batch size is accepted (the file is otherwise valid)
        assert load_capture(_write(tmp_path / "b.safetensors", {**meta, "batch_size": 100_000},
                                   tensors)).batch_size == 100_000


# -- class 4: truth belongs to its capture -------------------------------------------------------------------
def test_truth_of_another_capture_is_refused(digit_capture, tmp_path: Path) -> None:
    path, _, _, truth = digit_capture
    obs = load_capture(path)
    x, y = load_dataset("digits").batch([8])
    other, other_truth = simulate(obs.model_spec, x, y, num_classes=10, mean=(0.5,), std=(0.25,), seed=1)
    mine = save_truth(truth, tmp_path / "mine.truth.safetensors", capture=obs)
    theirs = save_truth(other_truth, tmp_path / "theirs.truth.safetensors", capture=other)
    assert torch.equal(load_truth(mine, capture=obs).inputs, truth.inputs)
    with pytest.raises(CaptureError, match="belongs to another capture"):
        load_truth(theirs, capture=obs)


def test_truth_values_are_checked(digit_capture, tmp_path: Path) -> None:
    path, _, _, truth = digit_capture
    obs = load_capture(path)
    save_file({"inputs": truth.inputs * 3, "labels": truth.labels},
              str(tmp_path / "bright.safetensors"), metadata={"gradleak": json.dumps(
                  {"format": "gradleak.truth", "version": 2})})
    with pytest.raises(CaptureError, match=r"pixels must lie in \[0, 1\]"):
        load_truth(tmp_path / "bright.safetensors", capture=obs)
    save_file({"inputs": truth.inputs, "labels": torch.tensor([12])},
              str(tmp_path / "label.safetensors"), metadata={"gradleak": json.dumps(
                  {"format": "gradleak.truth", "version": 2})})
    with pytest.raises(CaptureError, match=r"truth labels must lie in \[0, 10\)"):
        load_truth(tmp_path / "label.safetensors", capture=obs)


def test_cli_refuses_a_foreign_truth(digit_capture, tmp_path: Path, capsys) -> None:
    from gradleak.cli import main

    path, _, _, truth = digit_capture
    x, y = load_dataset("digits").batch([9])
    obs = load_capture(path)
    other, other_truth = simulate(obs.model_spec, x, y, num_classes=10, mean=(0.5,), std=(0.25,), seed=2)
    foreign = save_truth(other_truth, tmp_path / "foreign.truth.safetensors", capture=other)
    code = main(["attack", str(path), "--truth", str(foreign), "--iterations", "2", "--quiet",
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "belongs to another capture" in capsys.readouterr().err


# -- version 1 files of the previous release still load -------------------------------------------------------
def test_version_1_capture_and_truth_still_load_and_attack() -> None:
    from gradleak.attacks import ATTACKS
    from gradleak.metrics import score

    obs = load_capture(FIXTURES / "capture_v1_digits.safetensors")
    truth = load_truth(FIXTURES / "capture_v1_digits.truth.safetensors", capture=obs)
    assert obs.inputs.kind == "image" and obs.input_shape == (1, 32, 32) and obs.num_classes == 10
    recon = ATTACKS.build("idlg", iterations=200).reconstruct(obs)
    assert score(recon.inputs, recon.labels, truth).means()["psnr"] > 30


# -- feature vectors are one input kind among three -------------------------------------------------------------
def test_feature_vectors_are_attacked_by_the_same_engine() -> None:
    from gradleak.attacks import ATTACKS
    from gradleak.metrics import score

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 20, generator=g)
    spec = ModelSpec("tabular", {}, source="instance", template=torch.nn.Sequential(
        torch.nn.Linear(20, 16), torch.nn.Sigmoid(), torch.nn.Linear(16, 4)))
    obs, truth = simulate(spec, x, torch.tensor([2]), num_classes=4)
    assert isinstance(obs.inputs, FeatureInput)
    recon = ATTACKS.build("idlg", iterations=100).reconstruct(obs)
    assert score(recon.inputs, recon.labels, truth).means()["mse"] < 1e-6
    with pytest.raises(GradleakError, match="handles image inputs, not features"):
        ATTACKS.build("inverting", iterations=1).reconstruct(obs)


# -- class 10: fuzzing --------------------------------------------------------------------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
_DTYPES = st.sampled_from([torch.float32, torch.float16, torch.float64, torch.int64, torch.int8, torch.bool,
                           torch.uint8, torch.bfloat16])
_KEYS = ["model", "inputs", "task", "update_kind", "batch_size", "model_mode", "local_training", "info",
         "version", "update_digest", "format"]


@st.composite
def _tensor(draw, like: torch.Tensor | None = None) -> torch.Tensor:
    same = like is not None and draw(st.booleans())
    shape = list(like.shape) if same else draw(st.lists(st.integers(0, 5), max_size=4))
    dtype = draw(_DTYPES)
    fill = draw(st.sampled_from([0.0, 1.0, -3.0, math.nan, math.inf, 300.0]))
    return torch.full(shape, fill).to(dtype) if dtype != torch.bool else torch.zeros(shape, dtype=torch.bool)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_captures_load_or_raise_our_error(digit_capture, tmp_path: Path, data) -> None:
    _, meta, tensors, _ = digit_capture
    meta = json.loads(json.dumps(meta))
    tensors = dict(tensors)
    if data.draw(st.booleans()):  # without the digest, tensor edits reach the other checks
        meta.pop("update_digest")
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["set", "delete", "nest", "tensor", "drop_tensor", "labels"]))
        if action == "set":
            meta[data.draw(st.sampled_from(_KEYS))] = data.draw(_JSON)
        elif action == "delete":
            meta.pop(data.draw(st.sampled_from(_KEYS)), None)
        elif action == "nest":
            part = data.draw(st.sampled_from(["model", "inputs", "task", "local_training"]))
            if isinstance(meta.get(part), dict) and meta[part]:
                meta[part][data.draw(st.sampled_from(sorted(meta[part])))] = data.draw(_JSON)
            else:
                meta[part] = data.draw(_JSON)
        elif action == "tensor":
            key = data.draw(st.sampled_from(sorted(tensors)))
            tensors[key] = data.draw(_tensor(tensors[key]))
        elif action == "drop_tensor":
            tensors.pop(data.draw(st.sampled_from(sorted(tensors))))
        else:
            tensors["labels"] = data.draw(_tensor(torch.zeros(1)))
    path = tmp_path / "fuzz.safetensors"
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path),
                  metadata={"gradleak": json.dumps(meta)})
    except Exception:  # safetensors itself refuses the combination: nothing to load
        return
    try:
        obs = load_capture(path)
    except GradleakError:
        return
    # what the rest of the code relies on holds for everything that loads
    assert isinstance(obs, Observation)
    assert type(obs.batch_size) is int and 1 <= obs.batch_size <= 4096
    for t in [*obs.update.values(), *obs.weights.values()]:
        assert not t.dtype.is_floating_point or bool(torch.isfinite(t).all())
    assert all(t.dtype.is_floating_point for t in obs.update.values())
    if obs.labels is not None:
        assert not obs.labels.dtype.is_floating_point and obs.labels.shape == (obs.batch_size,)
        assert 0 <= int(obs.labels.min()) and int(obs.labels.max()) < obs.num_classes
    assert obs.model_mode in ("train", "eval")


@pytest.fixture(scope="module")
def buffer_capture(tmp_path_factory) -> tuple[Path, dict, dict]:
    """A capture whose update carries BatchNorm running-statistics changes (a client that sends its state dict)."""
    ds = load_dataset("photos", size=16)
    spec = ModelSpec("convnet", {"in_channels": 3, "num_classes": ds.num_classes, "image_size": 16, "width": 4})
    x, y = ds.batch([3])
    obs, _ = simulate(spec, x, y, num_classes=ds.num_classes, mean=ds.mean, std=ds.std, seed=0, share_buffers=True)
    path = save_capture(obs, tmp_path_factory.mktemp("cap") / "b.safetensors")
    back = load_capture(path)  # the buffer entries round-trip, and stay out of the gradient
    assert back.buffer_update and all(torch.equal(back.update[k], v) for k, v in obs.update.items())
    assert set(back.gradient_estimate()) == set(obs.parameter_update)
    with safe_open(str(path), framework="pt") as f:
        return path, json.loads(f.metadata()["gradleak"]), {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("change, message", [
    (lambda t: t.fill_(math.nan), r"update tensor 'features.1.running_var' contains NaN or Inf"),
    (lambda t: torch.zeros(5),
     r"update tensor 'features.1.running_var' has shape \(5,\), model 'convnet' expects \(4,\)"),
    (lambda t: t.long(), r"update tensor 'features.1.running_var' has dtype torch.int64; a floating-point"),
])
def test_carried_buffer_changes_are_validated_at_the_boundary(buffer_capture, tmp_path: Path, change, message) -> None:
    _, meta, tensors = buffer_capture
    key = "update/features.1.running_var"
    bad = {**tensors, key: change(tensors[key].clone())}
    meta = {k: v for k, v in meta.items() if k != "update_digest"}
    with pytest.raises(CaptureError, match=message):
        load_capture(_write(tmp_path / "bad.safetensors", meta, bad))


def test_a_buffer_name_the_model_lacks_or_an_update_of_buffers_only_is_refused(buffer_capture, tmp_path: Path) -> None:
    _, meta, tensors = buffer_capture
    meta = {k: v for k, v in meta.items() if k != "update_digest"}
    stray = {**tensors, "update/features.1.num_batches_tracked": torch.ones(())}
    with pytest.raises(CaptureError, match=r"update key 'features.1.num_batches_tracked' is not a parameter or "
                                           r"BatchNorm running statistic of model 'convnet'"):
        load_capture(_write(tmp_path / "stray.safetensors", meta, stray))
    only = {k: v for k, v in tensors.items()
            if not k.startswith("update/") or k.endswith(("running_mean", "running_var"))}
    with pytest.raises(CaptureError, match="BatchNorm running statistics only"):
        load_capture(_write(tmp_path / "only.safetensors", meta, only))
