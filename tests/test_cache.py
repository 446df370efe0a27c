"""Locally pre-trained image models are trained once per recipe, cached as safetensors, and re-trained when the
cached file is damaged."""

from __future__ import annotations

import torch

from gradleak.cache import cache_dir
from gradleak.data import load_dataset
from gradleak.observation import ModelSpec
from gradleak.training import pretrained


def _spec() -> ModelSpec:
    return ModelSpec("lenet", {"in_channels": 1, "num_classes": 10, "image_size": 16})


def test_pretrained_is_cached_and_leaves_the_global_random_state(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADLEAK_CACHE", str(tmp_path))
    ds = load_dataset("digits", size=16)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = pretrained(_spec(), ds, range(100, 400), steps=5, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    files = list((cache_dir() / "image-models").glob("*.safetensors"))
    assert len(files) == 1
    untrained = _spec()
    torch.manual_seed(1)
    init = untrained.build().state_dict()
    assert any(not torch.equal(first[k], init[k]) for k in init)  # it did train
    stamp = files[0].stat().st_mtime_ns
    again = pretrained(_spec(), ds, range(100, 400), steps=5, seed=1)
    assert files[0].stat().st_mtime_ns == stamp  # read, not re-trained
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = pretrained(_spec(), ds, range(100, 400), steps=6, seed=1)  # another recipe, another file
    assert len(list((cache_dir() / "image-models").glob("*.safetensors"))) == 2
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_a_damaged_cache_file_is_trained_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADLEAK_CACHE", str(tmp_path))
    ds = load_dataset("digits", size=16)
    first = pretrained(_spec(), ds, range(50), steps=3, seed=0)
    (path,) = (cache_dir() / "image-models").glob("*.safetensors")
    path.write_bytes(b"\x00" * 64)
    again = pretrained(_spec(), ds, range(50), steps=3, seed=0)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert path.stat().st_size > 64
