"""Loaders for a user's own data in standard formats. None of them runs arbitrary pickled code.

- CIFAR-10 python batches: the pickles are read by a restricted unpickler that admits only the NumPy
  array constructors that format needs; anything else in the file is refused.
- ImageFolder trees: ``root/<class>/<image>``, read with Pillow.
- ``.npz`` archives with ``images`` and ``labels`` arrays, loaded with ``allow_pickle=False``.

Every loader bounds what a file can make it allocate (``gradleak.limits``: pixels of one image, elements of
the whole dataset, number of classes) and turns a broken file into a ``DataError`` that names it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from gradleak import limits
from gradleak.data.dataset import ImageDataset, check_elements, to_nchw_float
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
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - any malformed pickle stream is the file's fault, never a traceback
        raise DataError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
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
            names = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in label_names)
            if not names or len(names) > limits.limits().num_classes:
                raise DataError(f"{meta_path}: 'label_names' must hold 1 to {limits.limits().num_classes} names")
    images, labels = [], []
    for f in files:
        batch = _read_cifar_batch(f)
        for key in ("data", "labels"):
            if key not in batch:
                raise DataError(f"{f}: missing key {key!r} of a CIFAR-10 batch")
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{f}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
        raw_labels = batch["labels"]
        if not isinstance(raw_labels, (list, np.ndarray)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw_labels
        ):
            raise DataError(f"{f}: 'labels' must be a list of integer class indices")
        lab = np.asarray(raw_labels, dtype=np.int64).reshape(-1)
        if lab.shape != (data.shape[0],):
            raise DataError(f"{f}: {data.shape[0]} images but {lab.shape[0]} labels")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(lab))
        check_elements(str(root), (sum(len(i) for i in images), 3, 32, 32))
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
                    # the header gives the size before any pixel is decoded: refuse bombs and empty images
                    width, height = im.size
                    pixels = width * height * (1 if mode == "L" else 3)
                    if width < 1 or height < 1:
                        raise DataError(f"{f}: an empty image ({width} x {height} pixels)")
                    if pixels > limits.limits().input_elements:
                        raise DataError(f"{f}: {width} x {height} pixels, above the limit of "
                                        f"{limits.limits().input_elements} elements per image (a decompression "
                                        "bomb?); pass --allow-large if this is real large work")
                    arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
            except Image.DecompressionBombError as exc:
                raise DataError(f"{f}: refused as a decompression bomb ({exc})") from None
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, zlib.error) as exc:
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"{f}: not a readable image ({exc})") from None
            t = torch.from_numpy(arr)
            t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
            images.append(to_nchw_float(t[None], size, channels))
            labels.append(label)
            check_elements(f"{root}", (len(images), *images[0].shape[1:]))
    if not images:
        raise DataError(f"{root}: no images with suffix in {sorted(IMAGE_SUFFIXES)}")
    return ImageDataset(f"imagefolder:{root}", torch.cat(images), torch.tensor(labels), tuple(classes))


def _npz_member_header(archive: zipfile.ZipFile, name: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one ``.npy`` member, read from its header before the array is allocated."""
    try:
        with archive.open(name + ".npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except KeyError:
        raise DataError(f"{path}: missing array {name!r}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged member is the file's fault
        raise DataError(f"{path}: array {name!r} is damaged ({type(exc).__name__}: {exc})") from None
    return tuple(int(d) for d in shape), dtype


def npz(path: str | Path, size: int | None = 32, channels: int | None = None) -> ImageDataset:
    """Read ``images`` ((N,H,W), (N,H,W,C) or (N,C,H,W); uint8 or floats in [0, 1]) and ``labels`` (N,)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (0 bytes), not a NumPy .npz archive")
    try:
        zipped = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{p}: not a NumPy .npz archive (a .npz is a zip of .npy arrays: {exc})") from None
    with zipped:
        members = sorted(n[:-4] for n in zipped.namelist() if n.endswith(".npy"))
        for key in ("images", "labels"):
            if key not in members:
                raise DataError(f"{p}: missing array {key!r} (found {members})")
        img_shape, img_dtype = _npz_member_header(zipped, "images", p)
        lab_shape, lab_dtype = _npz_member_header(zipped, "labels", p)
    if img_dtype.hasobject or lab_dtype.hasobject:
        raise DataError(f"{p}: not a NumPy .npz archive without pickled objects (object arrays are refused)")
    check_elements(str(p), img_shape, "'images'")
    if len(lab_shape) != 1 or len(img_shape) < 1 or lab_shape[0] != img_shape[0]:
        raise DataError(f"{p}: 'labels' must be of shape ({img_shape[0] if img_shape else 'N'},), got {lab_shape}")
    if img_shape[0] == 0:
        raise DataError(f"{p}: 'images' holds no images")
    try:
        with np.load(p, allow_pickle=False) as archive:
            imgs, labs = archive["images"], archive["labels"]
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt members: the file's fault
        raise DataError(f"{p}: not a readable NumPy .npz archive ({type(exc).__name__}: {exc})") from None
    if imgs.ndim == 3:
        imgs = imgs[:, None]
    elif imgs.ndim == 4 and imgs.shape[-1] in (1, 3) and imgs.shape[1] not in (1, 3):
        imgs = imgs.transpose(0, 3, 1, 2)
    elif imgs.ndim != 4:
        raise DataError(f"{p}: 'images' must be (N,H,W), (N,H,W,C) or (N,C,H,W), got shape {imgs.shape}")
    if imgs.shape[1] not in (1, 3):
        raise DataError(f"{p}: 'images' must have 1 or 3 channels, got shape {imgs.shape} (read as N,C,H,W)")
    check_elements(str(p), imgs.shape, "'images'")
    if imgs.dtype == np.uint8:
        pixels = torch.from_numpy(imgs.astype(np.float32) / 255.0)
    elif np.issubdtype(imgs.dtype, np.floating):
        if not np.isfinite(imgs).all() or imgs.min() < 0 or imgs.max() > 1:
            raise DataError(f"{p}: float 'images' must be finite and lie in [0, 1]")
        pixels = torch.from_numpy(imgs.astype(np.float32))
    else:
        raise DataError(f"{p}: 'images' must be uint8 or float, got {imgs.dtype}")
    if not np.issubdtype(labs.dtype, np.integer) or np.issubdtype(labs.dtype, np.bool_):
        raise DataError(f"{p}: 'labels' must be integers of shape ({imgs.shape[0]},), got {labs.dtype} {labs.shape}")
    if labs.min() < 0:
        raise DataError(f"{p}: 'labels' must be non-negative")
    num_classes = int(labs.max()) + 1
    bound = limits.limits().num_classes
    if num_classes > bound:
        raise DataError(f"{p}: largest label {num_classes - 1} makes {num_classes} classes, above the limit of "
                        f"{bound}; pass --allow-large if this is real large work")
    names = tuple(str(i) for i in range(num_classes))
    return ImageDataset(f"npz:{p}", to_nchw_float(pixels, size, channels), torch.from_numpy(labs.astype(np.int64)), names)
