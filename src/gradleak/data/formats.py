"""Loaders for a user's own data in standard formats. None of them runs arbitrary pickled code.

- CIFAR-10 python batches: the pickles are read by a restricted unpickler that admits only the NumPy
  array constructors that format needs; anything else in the file is refused.
- ImageFolder trees: ``root/<class>/<image>``, read with Pillow.
- ``.npz`` archives with ``images`` and ``labels`` arrays, loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from gradleak.data.dataset import ImageDataset, to_nchw_float
from gradleak.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class _CifarUnpickler(pickle.Unpickler):
    """Admit only what a CIFAR-10 batch holds: dicts, lists, bytes, ints and NumPy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the CIFAR-10 format")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> dict[str, object]:
    try:
        raw = _CifarUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({exc})") from exc
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict at the top of a CIFAR-10 batch, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def cifar10(path: str | Path, size: int = 32, channels: int | None = None, split: str = "train") -> ImageDataset:
    """Read ``data_batch_*`` (split='train') or ``test_batch`` (split='test') from a CIFAR-10 python folder."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: expected the CIFAR-10 python folder (cifar-10-batches-py)")
    pattern = "data_batch_*" if split == "train" else "test_batch"
    files = sorted(root.glob(pattern))
    if not files:
        raise DataError(f"{root}: no {pattern} files found")
    names = tuple(f"class{i}" for i in range(10))
    meta_path = root / "batches.meta"
    if meta_path.exists():
        meta = _read_cifar_batch(meta_path)
        label_names = meta.get("label_names")
        if isinstance(label_names, list):
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in label_names)
    images, labels = [], []
    for f in files:
        batch = _read_cifar_batch(f)
        for key in ("data", "labels"):
            if key not in batch:
                raise DataError(f"{f}: missing key {key!r} of a CIFAR-10 batch")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{f}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
        lab = np.asarray(batch["labels"], dtype=np.int64)
        if lab.shape != (data.shape[0],):
            raise DataError(f"{f}: {data.shape[0]} images but {lab.shape[0]} labels")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(lab))
    pixels = torch.cat(images).float() / 255.0
    return ImageDataset(f"cifar10:{root}", to_nchw_float(pixels, size, channels), torch.cat(labels), names)


def imagefolder(path: str | Path, size: int = 32, channels: int | None = 3) -> ImageDataset:
    """Read ``root/<class>/<image>``; classes are the sorted sub-folder names."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: expected an ImageFolder root with one sub-folder per class")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: no class sub-folders found")
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{f}: not a readable image ({exc})") from exc
            t = torch.from_numpy(arr)
            t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
            images.append(to_nchw_float(t[None], size, channels))
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no images with suffix in {sorted(IMAGE_SUFFIXES)}")
    return ImageDataset(f"imagefolder:{root}", torch.cat(images), torch.tensor(labels), tuple(classes))


def npz(path: str | Path, size: int | None = 32, channels: int | None = None) -> ImageDataset:
    """Read ``images`` ((N,H,W), (N,H,W,C) or (N,C,H,W); uint8 or floats in [0, 1]) and ``labels`` (N,)."""
    p = Path(path)
    try:
        archive = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{p}: file not found") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{p}: not a NumPy .npz archive without pickled objects ({exc})") from exc
    with archive:
        for key in ("images", "labels"):
            if key not in archive.files:
                raise DataError(f"{p}: missing array {key!r} (found {sorted(archive.files)})")
        try:
            imgs, labs = archive["images"], archive["labels"]
        except ValueError as exc:
            raise DataError(f"{p}: not a NumPy .npz archive without pickled objects ({exc})") from exc
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    elif imgs.ndim == 4 and imgs.shape[-1] in (1, 3) and imgs.shape[1] not in (1, 3):
        imgs = imgs.transpose(0, 3, 1, 2)
    elif imgs.ndim != 4:
        raise DataError(f"{p}: 'images' must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {imgs.shape}")
    if imgs.dtype == np.uint8:
        pixels = torch.from_numpy(imgs.astype(np.float32) / 255.0)
    elif np.issubdtype(imgs.dtype, np.floating):
        if not np.isfinite(imgs).all() or imgs.min() < 0 or imgs.max() > 1:
            raise DataError(f"{p}: float 'images' must be finite and lie in [0, 1]")
        pixels = torch.from_numpy(imgs.astype(np.float32))
    else:
        raise DataError(f"{p}: 'images' must be uint8 or float, got {imgs.dtype}")
    if labs.shape != (imgs.shape[0],) or not np.issubdtype(labs.dtype, np.integer):
        raise DataError(f"{p}: 'labels' must be integers of shape ({imgs.shape[0]},), got {labs.dtype} {labs.shape}")
    if labs.min() < 0:
        raise DataError(f"{p}: 'labels' must be non-negative")
    num_classes = int(labs.max()) + 1
    names = tuple(str(i) for i in range(num_classes))
    return ImageDataset(f"npz:{p}", to_nchw_float(pixels, size, channels), torch.from_numpy(labs.astype(np.int64)), names)
