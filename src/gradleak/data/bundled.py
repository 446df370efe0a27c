"""Real images that ship inside scikit-image and scikit-learn, so nothing is downloaded at run time.

- ``faces``: the 200 LFW crops of ``skimage.data.lfw_subset`` (100 faces, 100 non-faces), grayscale.
- ``digits``: the 1,797 handwritten digits of ``sklearn.datasets.load_digits`` (UCI), grayscale.
- ``photos``: crops of ten colour photos from scikit-image and scikit-learn; the label is the source photo.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

from gradleak.data.dataset import ImageDataset, to_nchw_float

PHOTO_SOURCES: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "china",
    "flower",
    "motorcycle",
)


def faces(size: int = 32, channels: int | None = None) -> ImageDataset:
    from skimage.data import lfw_subset

    raw = torch.from_numpy(np.asarray(lfw_subset(), dtype=np.float32)).unsqueeze(1)
    labels = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    return ImageDataset("faces", to_nchw_float(raw, size, channels), labels, ("face", "non-face"))


def digits(size: int = 32, channels: int | None = None) -> ImageDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    raw = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    names = tuple(str(i) for i in range(10))
    return ImageDataset("digits", to_nchw_float(raw, size, channels), labels, names)


@lru_cache(maxsize=1)
def _photo_arrays() -> tuple[np.ndarray, ...]:
    import skimage.data as skd
    from sklearn.datasets import load_sample_images

    sk = load_sample_images().images
    loaders = {
        "china": lambda: sk[0],
        "flower": lambda: sk[1],
        "motorcycle": lambda: skd.stereo_motorcycle()[0],
    }
    return tuple(np.asarray(loaders[n]() if n in loaders else getattr(skd, n)())[..., :3] for n in PHOTO_SOURCES)


def _crops(photo: np.ndarray, size: int | None, grid: int = 3) -> torch.Tensor:
    """The whole photo's centre square plus a ``grid`` x ``grid`` tiling of it, each as one image, brought to a
    common side of 128 pixels, or ``size`` where it is larger (a 224 image resampled from the source, not from a
    128 copy; sides up to 128 are what they always were)."""
    img = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float().div(255.0)
    h, w = img.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = img[:, top : top + side, left : left + side]
    tiles = [square]
    step = side // grid
    for i in range(grid):
        for j in range(grid):
            tiles.append(square[:, i * step : (i + 1) * step, j * step : (j + 1) * step])
    # Bring every tile to a common size before stacking; callers resize to the final size.
    common = max(128, size or 0)
    return torch.cat(
        [F.interpolate(t[None], size=(common, common), mode="bilinear", antialias=True, align_corners=False) for t in tiles]
    )


def photos(size: int = 32, channels: int | None = None) -> ImageDataset:
    arrays = _photo_arrays()
    images, labels = [], []
    for label, arr in enumerate(arrays):
        tiles = _crops(arr, size)
        images.append(tiles)
        labels.append(torch.full((tiles.shape[0],), label, dtype=torch.long))
    raw = torch.cat(images)
    return ImageDataset("photos", to_nchw_float(raw, size, channels), torch.cat(labels), PHOTO_SOURCES,
                        label_is_source=True)
