"""Datasets by name: the bundled real images, or a user's files as ``FORMAT:PATH``.

``load_dataset("faces")``, ``load_dataset("npz:/data/x.npz")``, ``load_dataset("cifar10:/data/cifar-10-batches-py")``.
"""

from __future__ import annotations

from collections.abc import Callable

from gradleak.data import bundled, formats
from gradleak.data.dataset import ImageDataset, check_image_size
from gradleak.errors import ConfigError
from gradleak.registry import Registry

DATASETS: Registry[ImageDataset] = Registry("dataset")
DATASETS.register("faces")(bundled.faces)
DATASETS.register("digits")(bundled.digits)
DATASETS.register("photos")(bundled.photos)

FORMATS: dict[str, Callable[..., ImageDataset]] = {
    "cifar10": formats.cifar10,
    "imagefolder": formats.imagefolder,
    "npz": formats.npz,
}


def load_dataset(spec: str, size: int = 32, channels: int | None = None) -> ImageDataset:
    """A bundled dataset by name, or a user's data as ``cifar10:DIR``, ``imagefolder:DIR`` or ``npz:FILE``."""
    if size is not None:
        check_image_size(size, channels)
    fmt, sep, path = spec.partition(":")
    if sep:
        if fmt.lower() not in FORMATS:
            raise ConfigError(f"unknown data format {fmt!r} in {spec!r}; known: {sorted(FORMATS)}")
        return FORMATS[fmt.lower()](path, size=size, channels=channels)
    return DATASETS.build(spec, size=size, channels=channels)


__all__ = ["DATASETS", "FORMATS", "ImageDataset", "check_image_size", "load_dataset"]
