"""User data loaders, exercised on small files written here in each format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.data import load_dataset
from gradleak.errors import DataError


def _cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    with path.open("wb") as f:
        pickle.dump({b"batch_label": b"training batch", b"labels": labels, b"data": data,
                     b"filenames": [b"x.png"] * n}, f, protocol=2)
    return data, labels


def test_cifar10_python_batches(tmp_path: Path) -> None:
    d1, l1 = _cifar_batch(tmp_path / "data_batch_1", 4, 0)
    d2, l2 = _cifar_batch(tmp_path / "data_batch_2", 3, 1)
    with (tmp_path / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, f)
    ds = load_dataset(f"cifar10:{tmp_path}", size=None)
    assert ds.images.shape == (7, 3, 32, 32)
    assert ds.labels.tolist() == l1 + l2
    expected = torch.from_numpy(d2[1].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(ds.images[5], expected)
    assert ds.class_names[3] == "c3"


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar10_refuses_foreign_pickles(tmp_path: Path) -> None:
    with (tmp_path / "data_batch_1").open("wb") as f:
        pickle.dump({b"data": _Boom(), b"labels": [0]}, f)
    with pytest.raises(DataError, match=r"refusing to load (posix|os)\.system"):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar10_wrong_layout_is_named(tmp_path: Path) -> None:
    with (tmp_path / "data_batch_1").open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DataError, match=r"data_batch_1: 'data' must be uint8 of shape \(N, 3072\)"):
        load_dataset(f"cifar10:{tmp_path}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no data_batch_\* files found"):
        load_dataset(f"cifar10:{empty}")
    with pytest.raises(DataError, match="expected the CIFAR-10 python folder"):
        load_dataset(f"cifar10:{tmp_path / 'data_batch_1'}")


def test_imagefolder_tree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            arr = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
            pixels[(cls, i)] = arr
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"imagefolder:{tmp_path}", size=None)
    assert ds.class_names == ("cat", "dog")
    assert ds.labels.tolist() == [0, 0, 1, 1]
    expected = torch.from_numpy(pixels[("dog", 1)]).permute(2, 0, 1).float() / 255
    assert torch.allclose(ds.images[3], expected)


def test_imagefolder_bad_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png: not a readable image"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_npz_arrays(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([0, 1, 2, 1, 0]))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}", size=None)
    assert ds.images.shape == (5, 1, 12, 12) and ds.num_classes == 3
    assert torch.allclose(ds.images[2, 0], torch.from_numpy(images[2]).float() / 255)
    hwc = np.random.default_rng(1).random((3, 10, 10, 3), dtype=np.float32)
    np.savez(tmp_path / "c.npz", images=hwc, labels=np.array([0, 0, 1]))
    assert load_dataset(f"npz:{tmp_path / 'c.npz'}", size=None).images.shape == (3, 3, 10, 10)


def test_npz_errors_name_the_array(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", pictures=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"a\.npz: missing array 'images'"):
        load_dataset(f"npz:{tmp_path / 'a.npz'}")
    np.savez(tmp_path / "b.npz", images=np.full((2, 4, 4), 3.0), labels=np.array([0, 1]))
    with pytest.raises(DataError, match=r"b\.npz: float 'images' must be finite and lie in \[0, 1\]"):
        load_dataset(f"npz:{tmp_path / 'b.npz'}")
    np.savez(tmp_path / "c.npz", images=np.array([object()], dtype=object), labels=np.array([0]))
    with pytest.raises(DataError, match="without pickled objects"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}")
    with pytest.raises(DataError, match="file not found"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
