"""User data loaders, exercised on small files written here in each format."""

from __future__ import annotations

import io

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


# --- hostile files: every one is a one-line DataError naming the file, never a traceback (issue 11) ---


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels (what a decompression bomb or a 0x0 file shows
    before any pixel is decoded), with one empty IDAT chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"z\.npz: empty file \(0 bytes\)"),
        (b"PK\x03\x04 truncated", r"z\.npz: not a NumPy \.npz archive"),
        ("npy", r"z\.npz: not a NumPy \.npz archive"),  # a plain .npy renamed: the wrong kind of NumPy file
    ],
)
def test_npz_empty_truncated_wrong_kind(tmp_path: Path, content: bytes | str, message: str) -> None:
    path = tmp_path / "z.npz"
    if content == "npy":
        with path.open("wb") as fh:
            np.save(fh, np.zeros((2, 4, 4), dtype=np.uint8))
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message):
        load_dataset(f"npz:{path}")


def test_npz_cut_in_the_middle_of_an_array(tmp_path: Path) -> None:
    whole = tmp_path / "whole.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(whole, images=rng.integers(0, 256, (64, 16, 16), dtype=np.uint8), labels=np.arange(64) % 3)
    data = whole.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2] + data[-200:])  # damaged middle, central directory kept at the end
    with pytest.raises(DataError, match=r"cut\.npz: "):
        load_dataset(f"npz:{cut}")


def test_npz_no_images_zero_sized_and_huge_label(tmp_path: Path) -> None:
    np.savez(tmp_path / "none.npz", images=np.zeros((0, 4, 4), np.uint8), labels=np.zeros(0, np.int64))
    with pytest.raises(DataError, match=r"none\.npz: 'images' holds no images"):
        load_dataset(f"npz:{tmp_path / 'none.npz'}")
    np.savez(tmp_path / "flat.npz", images=np.zeros((2, 0, 0), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(DataError, match=r"flat\.npz: 'images' of shape \(2, 0, 0\) are empty"):
        load_dataset(f"npz:{tmp_path / 'flat.npz'}")
    # a label of 2^40 would build 2^40 class names
    np.savez(tmp_path / "big.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 2**40]))
    with pytest.raises(DataError, match=r"big\.npz: largest label 1099511627776 .* above the limit of 1000000"):
        load_dataset(f"npz:{tmp_path / 'big.npz'}")


def test_npz_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path: Path) -> None:
    import zipfile

    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.uint8))
    header["shape"] = (10**6, 1000, 1000)  # 10^12 pixels claimed by a file of a few hundred bytes
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as zf:
        zf.writestr("images.npy", buf.getvalue() + b"\x00" * 16)
        labels = io.BytesIO()
        np.save(labels, np.zeros(10**6, np.int64)[:2])
        zf.writestr("labels.npy", labels.getvalue())
    with pytest.raises(DataError, match=r"bomb\.npz: 'images' of shape \(1000000, 1000, 1000\) hold 1000000000000 "
                       r"elements, above the limit"):
        load_dataset(f"npz:{tmp_path / 'bomb.npz'}")


def test_png_bomb_and_empty_png_are_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    _png_header_only(tmp_path / "a" / "bomb.png", 100_000, 100_000)  # 10^10 pixels: PIL's bomb check fires
    with pytest.raises(DataError, match=r"bomb\.png: refused as a decompression bomb"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "a" / "bomb.png").unlink()
    _png_header_only(tmp_path / "a" / "wide.png", 4000, 4000)  # under PIL's bound, over ours (3 * 1024^2)
    with pytest.raises(DataError, match=r"wide\.png: 4000 x 4000 pixels, above the limit"):
        load_dataset(f"imagefolder:{tmp_path}")
    (tmp_path / "a" / "wide.png").unlink()
    _png_header_only(tmp_path / "a" / "empty.png", 0, 0)
    with pytest.raises(DataError, match=r"empty\.png: "):
        load_dataset(f"imagefolder:{tmp_path}")


def test_cifar_string_labels_and_binary_names(tmp_path: Path) -> None:
    with (tmp_path / "data_batch_1").open("wb") as f:
        pickle.dump({b"labels": [b"cat", b"dog"], b"data": np.zeros((2, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_1: 'labels' must be a list of integer class indices"):
        load_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x02}q\x00(X")  # a pickle cut short
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR-10 python batch"):
        load_dataset(f"cifar10:{tmp_path}")


@pytest.mark.parametrize("size", [0, -3, 100_000])
def test_image_size_is_bounded(size: int) -> None:
    from gradleak.errors import ConfigError

    with pytest.raises(ConfigError, match=r"image_size"):
        load_dataset("digits", size=size)


def test_allow_large_lifts_the_label_bound(tmp_path: Path) -> None:
    from gradleak.limits import set_limits

    np.savez(tmp_path / "d.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 11]))
    set_limits(num_classes=10)
    try:
        with pytest.raises(DataError, match="above the limit of 10"):
            load_dataset(f"npz:{tmp_path / 'd.npz'}", size=None)
    finally:
        set_limits()
    assert load_dataset(f"npz:{tmp_path / 'd.npz'}", size=None).num_classes == 12
